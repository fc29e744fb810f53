// The jobs pages. Loaded as a file (the CSP forbids inline scripts and eval).
// 1. The new-job form shows the variables of the chosen saved prompt only, and the text box
//    only when no saved prompt is chosen (hidden parts are disabled, so they are not sent).
// 2. Forms with data-confirm ask before they submit (delete).

(function () {
  "use strict";

  var picker = document.querySelector("select[data-prompt-picker]");
  if (picker) {
    var form = picker.form;
    var update = function () {
      form.querySelectorAll("fieldset[data-prompt-fields]").forEach(function (fieldset) {
        var chosen = fieldset.dataset.promptFields === picker.value;
        fieldset.hidden = !chosen;
        fieldset.disabled = !chosen;
      });
      var text = form.querySelector("[data-prompt-text]");
      if (text) {
        var own = picker.value === "";
        text.hidden = !own;
        text.querySelector("textarea").disabled = !own;
      }
    };
    picker.addEventListener("change", update);
    update();
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  });
})();
