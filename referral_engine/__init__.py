"""Referral Engine's core: the domain, with no web framework in it.

Subpackages by concept, each with a small public API in its `__init__`; the web layer
imports only those names (make lint's import contract).
"""
