/* The idle warning: a few minutes before the session ends, say so and offer "Stay signed
   in", which renews it (POST /session/renew) and hands the forms on the page the new
   session's CSRF token. When it has ended, say that what is being typed is kept
   (drafts.js) and will be back after signing in again. */
(function () {
  "use strict";
  var body = document.body;
  var left = parseFloat(body.getAttribute("data-session-left"));
  var warn = parseFloat(body.getAttribute("data-session-warn"));
  var box = document.getElementById("session-warning");
  if (isNaN(left) || !box) return;
  var text = document.getElementById("session-warning-text");
  var button = document.getElementById("stay-signed-in");
  var deadline = Date.now() + left * 1000;

  function minutes(seconds) {
    var m = Math.max(1, Math.ceil(seconds / 60));
    return m + (m === 1 ? " minute" : " minutes");
  }

  function tick() {
    var s = (deadline - Date.now()) / 1000;
    if (s <= 0) {
      box.hidden = false;
      button.hidden = true;
      text.textContent = "Your session has ended. What you typed is kept in this tab: " +
        "sign in again and it will be back.";
    } else if (s <= warn) {
      box.hidden = false;
      button.hidden = false;
      text.textContent = "You will be signed out in " + minutes(s) +
        " because nothing has been sent for a while. What you typed is kept either way.";
    } else {
      box.hidden = true;
    }
  }

  button.addEventListener("click", function () {
    var csrf = document.querySelector('input[name="csrf"]');
    var form = new URLSearchParams();
    form.set("csrf", csrf ? csrf.value : "");
    fetch("/session/renew", {
      method: "POST", body: form, credentials: "same-origin",
      headers: {"Accept": "application/json"}
    }).then(function (r) {
      if (!r.ok) throw new Error("renew " + r.status);
      return r.json();
    }).then(function (answer) {
      deadline = Date.now() + answer.expires_in * 1000;
      document.querySelectorAll('input[name="csrf"]').forEach(function (i) {
        i.value = answer.csrf;
      });
      body.setAttribute("data-session-renewed", "1");
      tick();
    }).catch(function () {
      text.textContent = "Your session could not be renewed. What you typed is kept: " +
        "sign in again and it will be back.";
    });
  });

  tick();
  window.setInterval(tick, 1000);
}());
