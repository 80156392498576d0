/* Referral Engine: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function describe(seconds) {
    var late = seconds < 0;
    var s = Math.abs(Math.floor(seconds));
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    var text = d ? d + "d " + h + "h" : (h ? h + "h " + pad(m) + "m" : m + "m");
    return late ? "overdue by " + text : text + " left";
  }

  /* Countdowns: <span data-due="ISO time">…</span> */
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-due]").forEach(function (el) {
      var due = Date.parse(el.getAttribute("data-due"));
      if (isNaN(due)) return;
      var left = (due - now) / 1000;
      el.textContent = describe(left);
      el.classList.toggle("tag-overdue", left < 0);
    });
  }

  /* DASH: score and criteria as the answers are given. */
  function dash() {
    var box = document.querySelector("[data-dash]");
    if (!box) return;
    var out = document.querySelector("[data-dash-result]");
    var threshold = parseInt(box.getAttribute("data-threshold"), 10) || 14;
    var escalation = parseInt(box.getAttribute("data-escalation"), 10) || 3;
    function update() {
      var yes = box.querySelectorAll("input[type=radio][value=yes]:checked").length;
      var incidents = parseInt((box.querySelector("[name=dash_police_incidents_12m]") || {}).value, 10) || 0;
      var pj = box.querySelector("[name=dash_professional_judgement]");
      var reasons = box.querySelector("[name=dash_rationale]");
      var criteria = [];
      if (yes >= threshold) criteria.push("visible high risk");
      if (pj && pj.checked && reasons && reasons.value.trim()) criteria.push("professional judgement");
      if (incidents >= escalation) criteria.push("potential escalation");
      out.textContent = "DASH score " + yes + " (high risk at " + threshold + "). Criteria met: " +
        (criteria.length ? criteria.join(", ") : "none yet") + ".";
    }
    box.addEventListener("change", update);
    box.addEventListener("input", update);
    update();
  }

  /* Show the DASH section only when domestic abuse is a concern (it is always shown
     without JavaScript). */
  function dashToggle() {
    var section = document.querySelector("[data-dash-section]");
    if (!section) return;
    var concerns = ["domestic_abuse", "stalking", "honour_based_abuse"].map(function (v) {
      return document.querySelector("input[name=concerns][value=" + v + "]");
    }).filter(Boolean);
    var pathway = document.querySelector("select[name=pathway]");
    function sync() {
      var wanted = concerns.some(function (c) { return c.checked; }) ||
        (pathway && pathway.value === "marac");
      section.hidden = !wanted;
    }
    concerns.forEach(function (c) { c.addEventListener("change", sync); });
    if (pathway) pathway.addEventListener("change", sync);
    sync();
  }

  ready(function () {
    var summary = document.querySelector("[data-focus]");
    if (summary) summary.focus();
    tick();
    setInterval(tick, 30000);
    dash();
    dashToggle();
  });
})();
