// Triplock approvals console: live updates by polling server-rendered fragments.
// Served as a file because the Content-Security-Policy allows no inline script.
// Fragments come from the same templates as the pages, escaped on the server.
"use strict";

(function () {
  var ID = /^[A-Za-z0-9_-]{1,80}$/;

  function hashId() {
    var id = decodeURIComponent(location.hash.replace(/^#/, ""));
    return ID.test(id) ? id : "";
  }

  // Replace a live region's content with a freshly fetched fragment, unless nothing changed.
  function apply(region, html) {
    if (region.dataset.lastHtml === html) return;
    var tpl = document.createElement("template");
    tpl.innerHTML = html;
    if (region.id === "decision") {
      // Keep the approver's half-typed reason: only swap when the state itself changed
      // (or the agent stopped waiting, which the approver should see at once).
      var now = region.querySelector("[data-state]");
      var next = tpl.content.querySelector("[data-state]");
      if (now && next && now.dataset.state === next.dataset.state &&
          now.dataset.abandoned === next.dataset.abandoned) return;
    }
    region.dataset.lastHtml = html;
    region.replaceChildren(tpl.content);
  }

  function poll(region) {
    var url = region.dataset.liveUrl;
    var every = parseInt(region.dataset.pollMs || "3000", 10);
    var busy = false;
    async function tick() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        var r = await fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } });
        if (r.status === 401) { location.reload(); return; } // session ended: show the login form
        if (r.ok) apply(region, await r.text());
      } catch (e) {
        // Network blip or gateway restart: the next tick tries again.
      } finally {
        busy = false;
      }
    }
    setInterval(tick, every);
    document.addEventListener("visibilitychange", tick);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var id = hashId();
    var next = document.getElementById("login-next");
    if (next && id && !next.value) next.value = id; // /console#<id> links survive the login
    if (id && document.getElementById("pending")) {
      location.replace("/console/approvals/" + encodeURIComponent(id));
      return;
    }
    document.querySelectorAll("[data-live-url]").forEach(poll);
  });
})();
