// The export page keeps up with the person (issue 13). Progressive: without this script the
// forms post natively and work as before. With it:
// - a form that is submitting ignores further submits and disables its buttons, so a double
//   click never reaches the server twice (a second POST would be refused as an R5 replay);
// - the preview says "Counting the selection…" while the next page is computed;
// - an export keeps its native POST (the download stays a real, streamed browser download)
//   and the page polls the export's progress about once a second: counting, rows written of
//   rows in all, done; on done it fetches the allowance as it now is and a fresh ticket, and
//   puts them on the page and in every form, so the same selection can be exported again in
//   the other format at once. A refusal answers with a page of its own, which replaces this.
"use strict";
(function () {
  var POLL_MS = 1000;
  var GIVE_UP_MS = 30 * 60 * 1000; // no word from the server for this long: say so
  var number = new Intl.NumberFormat("en-US");

  // Attributes, never form.dataset: a form's controls are its named properties, and these
  // forms have a control named "dataset" that hides the element's own.
  function data(form, name) { return form.getAttribute("data-" + name) || ""; }

  function buttons(form) { return form.querySelectorAll("button"); }
  function status(form) { return form.querySelector(".status"); }

  function busy(form, on, words) {
    if (on) form.setAttribute("data-busy", "1"); else form.removeAttribute("data-busy");
    var all = buttons(form);
    for (var i = 0; i < all.length; i++) all[i].disabled = on;
    if (words !== undefined && status(form)) status(form).textContent = words;
  }

  function setText(id, value) {
    var el = document.getElementById(id);
    if (el) el.textContent = value;
  }

  function fresh(form) {
    // The allowance as it now is and a new ticket (the one just used is spent).
    return fetch(data(form, "state"), {credentials: "same-origin", cache: "no-store",
                                      headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (s) {
        setText("remaining", number.format(s.remaining));
        setText("used", number.format(s.used));
        setText("limit", number.format(s.limit));
        setText("preview-remaining", number.format(s.remaining));
        var bar = document.getElementById("used-bar");
        if (bar && s.limit) bar.setAttribute("width", (Math.round(10000 * s.used / s.limit) / 10).toString());
        var objects = document.getElementById("preview-objects");
        var over = document.getElementById("preview-over");
        if (objects && over) over.hidden = Number(objects.dataset.objects) <= s.remaining;
        var frees = document.getElementById("frees-up");
        var release = document.getElementById("next-release");
        if (frees && release) {
          frees.hidden = !s.next_release;
          release.textContent = "";
          if (s.next_release) {
            var t = document.createElement("time");
            t.setAttribute("datetime", s.next_release);
            t.setAttribute("data-local", "");
            t.textContent = s.next_release.replace("T", " ").slice(0, 16) + " UTC";
            release.appendChild(t);
            if (window.gatekeeperTimes) window.gatekeeperTimes(release);
          }
        }
        var tickets = document.querySelectorAll("input[name=ticket]");
        for (var i = 0; i < tickets.length; i++) tickets[i].value = s.ticket;
        var forms = document.querySelectorAll("form[data-progress]");
        for (var j = 0; j < forms.length; j++) forms[j].setAttribute("data-progress", s.progress_url);
      });
  }

  function words(p) {
    if (p.state === "writing") {
      return "Preparing your file… " + number.format(p.written) + " of " +
        number.format(p.total) + " rows written";
    }
    if (p.state === "done") return "Done: your file is downloading.";
    if (p.state === "refused" || p.state === "failed") return "Not exported — the reason follows…";
    return "Counting the selection…";
  }

  function follow(form, url) {
    var started = Date.now();
    function poll() {
      fetch(url, {credentials: "same-origin", cache: "no-store",
                  headers: {"Accept": "application/json"}})
        .then(function (r) { return r.status === 404 ? {state: "unknown"} : r.json(); })
        .then(function (p) {
          if (p.state !== "unknown") status(form).textContent = words(p);
          if (p.state === "done") {
            return fresh(form).then(function () {
              busy(form, false, "Done: your file is downloading. The allowance above is " +
                   "up to date; you may export again (in the other format, say).");
            }, function () {
              busy(form, true, "Done: your file is downloading. Reload the page to export again.");
            });
          }
          if (p.state === "refused" || p.state === "failed") return; // its page follows
          if (Date.now() - started > GIVE_UP_MS) {
            status(form).textContent = "No word from the server; reload the page.";
            return;
          }
          setTimeout(poll, POLL_MS);
        })
        .catch(function () { setTimeout(poll, POLL_MS); });
    }
    setTimeout(poll, Math.min(POLL_MS, 300));
  }

  function onSubmit(event) {
    var form = event.currentTarget;
    if (data(form, "busy")) { event.preventDefault(); return; }
    if (data(form, "progress")) {
      busy(form, true, "Counting the selection…");
      follow(form, data(form, "progress"));
    } else {
      busy(form, true, data(form, "wait"));
    }
  }

  var forms = document.querySelectorAll("form[data-progress], form[data-wait]");
  for (var i = 0; i < forms.length; i++) forms[i].addEventListener("submit", onSubmit);

  // Back to this page from the browser's cache: it is not busy any more.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    for (var i = 0; i < forms.length; i++) busy(forms[i], false, "");
  });
})();
