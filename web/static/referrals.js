/* Referral form: show the FGM duty questions only when FGM is a concern (they are always
   shown without JavaScript). The DASH section and its live score are app.js's. */
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  ready(function () {
    var section = document.querySelector("[data-fgm-section]");
    var trigger = document.querySelector("input[name=concerns][value=female_genital_mutilation]");
    if (!section || !trigger) return;
    function sync() { section.hidden = !trigger.checked; }
    trigger.addEventListener("change", sync);
    sync();
  });
})();
