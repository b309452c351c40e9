// Times in the reader's own zone (issue 13). The server writes every moment as
// <time datetime="2026-11-29T08:00:00Z" data-local>2026-11-29 08:00 UTC</time>, which stays
// the text without JavaScript; this rewrites it as local time with a distance beside it
// ("in 23 hours", "5 minutes ago"), keeping the UTC text as the tooltip. No inline script:
// the CSP allows scripts from this site only.
"use strict";
(function () {
  var lang = document.documentElement.lang || undefined;
  var shown = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short"});
  var distance = new Intl.RelativeTimeFormat(lang, {numeric: "auto"});
  var UNITS = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];

  function ago(ms) {
    var s = Math.round((ms - Date.now()) / 1000);
    for (var i = 0; i < UNITS.length; i++) {
      // Hours up to two days ("in 23 hours" reads better than "tomorrow"), and so on down.
      if (Math.abs(s) >= UNITS[i][1] * (i === 0 ? 2 : 1) || i === UNITS.length - 1) {
        return distance.format(Math.round(s / UNITS[i][1]), UNITS[i][0]);
      }
    }
    return "";
  }

  function localise(root) {
    var found = (root || document).querySelectorAll("time[data-local]");
    for (var i = 0; i < found.length; i++) {
      var el = found[i];
      var ms = Date.parse(el.getAttribute("datetime"));
      if (isNaN(ms)) continue;
      if (!el.dataset.utc) el.dataset.utc = el.textContent;
      el.title = el.dataset.utc;
      // Rounded up to the minute, as the server does: a "from" time is never early.
      el.textContent = shown.format(new Date(Math.ceil(ms / 60000) * 60000)) +
        " (" + ago(ms) + ")";
    }
  }

  window.gatekeeperTimes = localise;
  localise(document);
  setInterval(function () { localise(document); }, 30000);
})();
