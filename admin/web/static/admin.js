// civicbot admin: the pages work without this file. It only
// - moves focus to an error summary when a form comes back with errors (as GOV.UK does), and
// - refreshes parts marked data-refresh (a broadcast's progress, live poll counts) in place.
(function () {
  "use strict";
  var summary = document.querySelector("[data-autofocus]");
  if (summary) { summary.focus(); }

  document.querySelectorAll("[data-refresh]").forEach(function (part) {
    var seconds = parseInt(part.getAttribute("data-refresh"), 10) || 5;
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(part.id);
          if (fresh && fresh.innerHTML !== part.innerHTML) { part.innerHTML = fresh.innerHTML; }
        })
        .catch(function () { /* the next tick tries again */ })
        .then(function () { busy = false; });
    }, seconds * 1000);
  });
})();
