/* Drafts that survive a session ending: every form marked data-draft="<name>" keeps what
   is typed into it in this tab's sessionStorage (never sent anywhere, gone when the tab
   closes), and puts it back when the form is shown again, e.g. after signing in again.
   A page that confirms the form was received (<meta name="draft-clear" content="<name>">)
   removes the draft. Passwords, files and the CSRF token are never kept. */
(function () {
  "use strict";
  var store;
  try { store = window.sessionStorage; } catch (e) { return; }
  if (!store) return;

  document.querySelectorAll('meta[name="draft-clear"]').forEach(function (m) {
    store.removeItem("draft:" + m.getAttribute("content"));
  });

  function kept(el) {
    if (!el.name || el.disabled) return false;
    var type = (el.type || "").toLowerCase();
    return ["password", "file", "hidden", "submit", "button", "reset"].indexOf(type) < 0;
  }

  function save(form, key) {
    var values = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!kept(el)) return;
      var type = (el.type || "").toLowerCase();
      var list = values[el.name] || (values[el.name] = []);
      if (type === "checkbox" || type === "radio") {
        if (el.checked) list.push(el.value);
      } else if (el.tagName === "SELECT" && el.multiple) {
        Array.prototype.forEach.call(el.selectedOptions, function (o) { list.push(o.value); });
      } else {
        list.push(el.value);
      }
    });
    try { store.setItem(key, JSON.stringify(values)); } catch (e) { /* full: keep going */ }
  }

  function restore(form, values) {
    var seen = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!kept(el) || !(el.name in values)) return;
      var type = (el.type || "").toLowerCase();
      var list = values[el.name];
      if (type === "checkbox" || type === "radio") {
        el.checked = list.indexOf(el.value) >= 0;
      } else if (el.tagName === "SELECT" && el.multiple) {
        Array.prototype.forEach.call(el.options, function (o) {
          o.selected = list.indexOf(o.value) >= 0;
        });
      } else {
        var i = seen[el.name] || 0;
        if (i < list.length) el.value = list[i];
        seen[el.name] = i + 1;
      }
      el.dispatchEvent(new Event("change", {bubbles: true}));
    });
  }

  document.querySelectorAll("form[data-draft]").forEach(function (form) {
    var key = "draft:" + form.getAttribute("data-draft");
    var saved = store.getItem(key);
    if (saved) {
      try {
        restore(form, JSON.parse(saved));
        var details = form.closest("details");
        // A case's event form, when the address points at it (signing in again after a
        // timeout comes back to /cases/N#event-<event>): show what came back.
        if (details && details.id && window.location.hash === "#" + details.id) {
          details.open = true;
        }
        var note = document.createElement("div");
        note.className = "notice";
        note.id = "draft-restored";
        note.setAttribute("role", "status");
        note.textContent = "What you typed before has been put back. Check it, then send it.";
        form.parentNode.insertBefore(note, form);
      } catch (e) { store.removeItem(key); }
    }
    form.addEventListener("input", function () { save(form, key); });
    form.addEventListener("change", function () { save(form, key); });
    form.addEventListener("submit", function () { save(form, key); });
  });
}());
