// csm serve: the little the pages need from a script. No framework, no build step, nothing remote.
// Every page: times in the browser's zone, keyboard, one event stream. Pages work without it too.
"use strict";
(function () {
  const body = document.body;
  const page = body.dataset.page;
  const token = document.querySelector('meta[name="csm-token"]').content;
  const notice = document.getElementById("notice");

  // The browser's zone, for the server's grouping by day (usage) and reading of "today" (filters).
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  document.cookie = "csm_tz=" + encodeURIComponent(zone) + "; path=/; SameSite=Strict";
  const tz = document.getElementById("tz");
  if (tz && !new URLSearchParams(location.search).has("tz") && tz.value !== zone) {
    const q = new URLSearchParams(location.search);
    q.set("tz", zone);
    location.replace(location.pathname + "?" + q.toString());
    return;
  }

  function localTimes(root) {
    const fmt = new Intl.DateTimeFormat(undefined, {dateStyle: "short", timeStyle: "short"});
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = fmt.format(d); t.title = t.getAttribute("datetime"); }
    });
  }
  localTimes(document);

  function say(text, kind) {
    notice.textContent = text;
    notice.className = "notice " + (kind || "");
    notice.hidden = !text;
  }

  // --- keyboard: / search, j/k next/previous, Enter open, ? help ---
  let selected = -1;
  function items() { return Array.from(document.querySelectorAll(".item")); }
  function select(i) {
    const all = items();
    if (!all.length) return;
    selected = Math.max(0, Math.min(all.length - 1, i));
    all.forEach(function (el) { el.classList.remove("selected"); });
    all[selected].classList.add("selected");
    all[selected].scrollIntoView({block: "nearest"});
  }
  document.addEventListener("keydown", function (ev) {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) {
      if (ev.key === "Escape") t.blur();
      return;
    }
    if (ev.key === "/") {
      ev.preventDefault();
      (document.getElementById("search-q") || document.getElementById("quick-search")).focus();
    } else if (ev.key === "j") {
      select(selected + 1);
    } else if (ev.key === "k") {
      select(selected - 1);
    } else if (ev.key === "Enter" && selected >= 0) {
      const a = items()[selected].querySelector("a, summary");
      if (a) a.click();
    } else if (ev.key === "?") {
      const help = document.getElementById("help");
      if (help.open) help.close(); else help.showModal();
    }
  });

  // --- copy buttons (the resume command) ---
  document.querySelectorAll("button.copy").forEach(function (b) {
    b.addEventListener("click", function () {
      const done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard) navigator.clipboard.writeText(b.dataset.copy).then(done, function () {});
    });
  });

  // --- the hit a search opened: in view, marked ---
  const hit = document.querySelector(".entry.hit");
  if (hit) { hit.id = hit.id || "hit"; hit.scrollIntoView({block: "center"}); select(items().indexOf(hit)); }

  // --- csmd not running: look again until it answers, then show the page ---
  if (page === "down") {
    const again = function () {
      fetch("/api/status", {headers: {"Accept": "application/json"}}).then(function (r) {
        if (r.ok) location.reload(); else setTimeout(again, 1000);
      }, function () { setTimeout(again, 1000); });
    };
    setTimeout(again, 1000);
    return;
  }

  // --- Sync now ---
  const syncForm = document.getElementById("sync-form");
  const syncResult = document.getElementById("sync-result");
  function human(n) {
    const u = ["B", "KB", "MB", "GB"]; let i = 0;
    while (n >= 1024 && i < 3) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + " " + u[i];
  }
  function showBacklog(b) {
    const box = document.getElementById("backlog");
    if (!box) return;
    if (!b) { box.hidden = true; return; }
    box.hidden = false;
    const bar = document.getElementById("backlog-bar");
    bar.value = b.counting || !b.bytes_total ? 0 : b.bytes_done / b.bytes_total;
    document.getElementById("backlog-text").textContent = b.counting
      ? "listing files: " + b.files_total + " so far"
      : b.files_done + "/" + b.files_total + " files, " + human(b.bytes_done) + " of " + human(b.bytes_total) +
        " at " + human(b.rate_bps) + "/s" + (b.eta_s != null ? ", ETA " + Math.round(b.eta_s) + " s" : "");
  }
  if (syncForm) {
    syncForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      const button = document.getElementById("sync-now");
      button.disabled = true;
      syncResult.textContent = "syncing…";
      fetch("/sync", {method: "POST", headers: {"X-CSM-Token": token, "Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(function (s) {
          syncResult.textContent = s.error ? "sync failed: " + s.error
            : "sync finished: scanned " + s.files_scanned + " files (" + s.files_changed + " changed), " +
              s.lines_ingested + " lines in " + s.seconds.toFixed(2) + " s";
          showBacklog(null);
        }, function (e) { syncResult.textContent = "sync failed: " + e; })
        .finally(function () { button.disabled = false; });
    });
  }

  // --- live: one event stream per page ---
  const params = new URLSearchParams({page: page, sessions: body.dataset.sessions || ""});
  const source = new EventSource("/events?" + params.toString());
  let refresh = null;
  source.addEventListener("csmd", function (ev) {
    const up = JSON.parse(ev.data).up;
    if (up) { if (notice.dataset.down) { delete notice.dataset.down; say(""); } }
    else { notice.dataset.down = "1"; say("csmd is not running: start it with 'csmd'. This page reconnects by itself.", "error"); }
  });
  source.addEventListener("dropped", function () {
    say("Some live updates were dropped: reloading.", "warn");
    source.close();
    setTimeout(function () { location.reload(); }, 300);
  });
  source.addEventListener("status", function (ev) {
    const s = JSON.parse(ev.data);
    if (s.error) { say(s.error, "error"); return; }
    if (!notice.dataset.down) say("");
    document.querySelectorAll("[data-field]").forEach(function (el) {
      const k = el.dataset.field, v = s[k];
      if (v === undefined || v === null || k === "last_sync_at") return;
      el.textContent = typeof v === "number" && k !== "pid" ? v.toLocaleString("en-US") : v;
    });
    showBacklog(s.backlog);
  });
  source.addEventListener("progress", function (ev) { showBacklog(JSON.parse(ev.data)); });
  // A session page shows new lines as a reload would (csmd's watch stream is only the signal): it fetches
  // its own page of entries again and puts in what changed or is new, keeping what the reader opened.
  const MARKS = ["new", "selected", "hit"];  // what the page, not the server, put on an entry
  function sameEntry(a, b) {
    const x = a.cloneNode(true);
    x.classList.remove.apply(x.classList, MARKS);
    x.querySelectorAll("details[open]").forEach(function (d) { d.removeAttribute("open"); });
    return x.isEqualNode(b);
  }
  function freshen(list, html) {
    const box = document.createElement("template");
    box.innerHTML = html.trim();
    const fresh = box.content.querySelector("#entries");
    if (!fresh) return;
    const open = new Set();
    list.querySelectorAll("details[open]").forEach(function (d) {
      const at = d.closest(".entry");
      if (at && at.id) open.add(at.id + ":" + Array.from(at.querySelectorAll("details")).indexOf(d));
    });
    let added = null;
    Array.from(fresh.children).forEach(function (el) {
      const old = el.id ? document.getElementById(el.id) : null;
      localTimes(el);
      el.classList.remove.apply(el.classList, MARKS);
      if (old && sameEntry(old, el)) return;
      el.querySelectorAll("details").forEach(function (d, k) { if (open.has(el.id + ":" + k)) d.open = true; });
      if (old) {
        MARKS.forEach(function (m) { if (old.classList.contains(m)) el.classList.add(m); });
        old.replaceWith(el);
      }
      else { el.classList.add("new"); list.appendChild(el); added = el; }
    });
    list.dataset.total = fresh.dataset.total;
    if (fresh.dataset.lastPage !== "1") say("New messages: on the next page.", "info");
    if (added && followBox && followBox.checked) added.scrollIntoView({block: "end"});
  }
  // One fetch at a time, and after one that took t ms a pause of 2t before the next: csmd builds the whole
  // conversation for a page, so a long session being written costs it at most a third of a core.
  const followBox = document.getElementById("follow");
  let busy = false, again = false;
  function refetch() {
    const list = document.getElementById("entries");
    if (busy) { again = true; return; }
    busy = true;
    const started = performance.now();
    const q = new URLSearchParams({page: list.dataset.page, fragment: "1"});
    fetch(location.pathname + "?" + q.toString()).then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) freshen(list, html); }, function () {})
      .finally(function () {
        setTimeout(function () {
          busy = false;
          if (again) { again = false; refetch(); }
        }, 2 * (performance.now() - started));
      });
  }
  source.addEventListener("entry", function () {
    if (page === "session") {
      const list = document.getElementById("entries");
      if (list.dataset.lastPage !== "1") { say("New messages: on the last page.", "info"); return; }
      refetch();
    } else if (page === "sessions" && !refresh) {
      // The list's order and figures change: fetch the same view (every filter is in the URL) again.
      refresh = setTimeout(function () {
        refresh = null;
        const q = new URLSearchParams(location.search);
        q.set("fragment", "1");
        fetch("/sessions?" + q.toString()).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
          if (html === null) return;
          const box = document.getElementById("sessions-live");
          box.innerHTML = html;
          localTimes(box);
        });
      }, 150);
    }
  });
})();
