// promptops page behaviour. Loaded as a file (the CSP forbids inline scripts and eval).
// 1. Every HTMX request carries the session's CSRF token from <meta name="csrf-token">.
// 2. HTMX errors that are not swapped show up in the toast region.
// 3. Alpine components (CSP build: registered here, referenced by name in the markup).

(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : null;
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  function toast(message) {
    var region = document.getElementById("toasts");
    if (!region) {
      return;
    }
    var item = document.createElement("div");
    item.className = "toast";
    item.setAttribute("role", "alert");
    item.textContent = message;
    region.appendChild(item);
    setTimeout(function () {
      item.remove();
    }, 8000);
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var message = "Request failed (" + xhr.status + ").";
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error && body.error.message) {
        message = body.error.message;
      }
    } catch (ignored) {
      // Not JSON: keep the generic message.
    }
    toast(message);
  });

  document.addEventListener("htmx:sendError", function () {
    toast("The server cannot be reached. Check your connection and try again.");
  });

  document.addEventListener("alpine:init", function () {
    // A secret input whose text can be shown while typing it.
    window.Alpine.data("reveal", function () {
      return {
        shown: false,
        toggle: function () {
          this.shown = !this.shown;
        },
        get inputType() {
          return this.shown ? "text" : "password";
        },
        get label() {
          return this.shown ? "Hide" : "Show";
        },
      };
    });
    // A message the user can dismiss.
    window.Alpine.data("dismissible", function () {
      return {
        open: true,
        close: function () {
          this.open = false;
        },
      };
    });
    // The copy button of a code block in an answer.
    window.Alpine.data("copycode", function () {
      return {
        copied: false,
        copy: function () {
          var pre = this.$el.closest(".code-block").querySelector("pre");
          if (!pre || !navigator.clipboard) {
            return;
          }
          var self = this;
          navigator.clipboard.writeText(pre.textContent).then(function () {
            self.copied = true;
          });
        },
        get label() {
          return this.copied ? "Copied" : "Copy";
        },
      };
    });
    // Copies the text of the element referenced by data-copy-target.
    window.Alpine.data("copyable", function () {
      return {
        copied: false,
        copy: function () {
          var target = document.getElementById(this.$el.dataset.copyTarget);
          if (!target || !navigator.clipboard) {
            return;
          }
          var self = this;
          navigator.clipboard.writeText(target.textContent.trim()).then(function () {
            self.copied = true;
          });
        },
        get copyLabel() {
          return this.copied ? "Copied" : "Copy";
        },
      };
    });
  });
})();
