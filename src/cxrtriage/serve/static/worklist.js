// Worklist page: renders GET /api/v1/worklist, polls it for new studies, j/k/Enter keyboard navigation.
(function () {
  "use strict";
  var root = document.getElementById("worklist");
  if (!root) return;
  var tbody = document.getElementById("worklist-rows");
  var more = document.getElementById("more");
  var updated = document.getElementById("updated");
  var pollMs = Number(root.dataset.pollMs) || 3000;
  var params = new URLSearchParams(window.location.search);
  Array.from(params.keys()).forEach(function (k) { if (!params.get(k)) params.delete(k); });
  var items = [], cursor = null, selected = 0, extraPages = false;

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  function row(it, i) {
    var tr = document.createElement("tr");
    tr.dataset.studyId = it.study_id;
    tr.dataset.href = it.page_url;
    tr.className = (it.read_status === "unread" ? "unread " : "") + (it.triage === "finding" ? "flagged" : "");
    var td = document.createElement("td");
    var img = document.createElement("img");
    img.src = it.thumbnail_url; img.alt = ""; img.loading = "lazy";
    td.appendChild(img); tr.appendChild(td);
    var a = document.createElement("a");
    a.href = it.page_url; a.textContent = it.received_at.slice(0, 19).replace("T", " ");
    td = document.createElement("td"); td.appendChild(a); tr.appendChild(td);
    tr.appendChild(text("td", it.source + " · " + it.source_format.toUpperCase()));
    td = text("td", (100 * it.priority).toFixed(1) + "%", "priority");
    tr.appendChild(td);
    td = document.createElement("td");
    it.results.forEach(function (r) {
      var s = text("span", r.model_name + ": " + r.label + (r.flag ? " (flag)" : "") + (r.applicable ? "" : " [outside population]"),
        "tag " + (!r.applicable ? "outside" : r.flag ? "finding" : "no_finding"));  // grey: not counted in the triage
      td.appendChild(s); td.appendChild(document.createTextNode(" "));
    });
    tr.appendChild(td);
    td = document.createElement("td"); td.appendChild(text("span", it.read_status, "tag " + it.read_status)); tr.appendChild(td);
    tr.appendChild(text("td", it.reference_label || "–"));
    tr.addEventListener("click", function (e) { if (e.target.tagName !== "A") select(i); });
    tr.addEventListener("dblclick", function () { open(); });
    return tr;
  }

  function render() {
    tbody.textContent = "";
    if (!items.length) { var tr = document.createElement("tr"); tr.appendChild(text("td", "No studies.")).colSpan = 7; tbody.appendChild(tr); }
    items.forEach(function (it, i) { tbody.appendChild(row(it, i)); });
    select(Math.min(selected, Math.max(0, items.length - 1)), true);
    more.hidden = !cursor;
    root.dataset.count = String(items.length);
  }

  function select(i, quiet) {
    var rows = tbody.querySelectorAll("tr[data-study-id]");
    rows.forEach(function (r) { r.classList.remove("selected"); });
    if (!rows.length) return;
    selected = Math.max(0, Math.min(rows.length - 1, i));
    rows[selected].classList.add("selected");
    root.dataset.selected = rows[selected].dataset.studyId;
    if (!quiet) rows[selected].scrollIntoView({ block: "nearest" });
  }

  function open() {
    var r = tbody.querySelectorAll("tr[data-study-id]")[selected];
    if (r) window.location.assign(r.dataset.href);
  }

  function counts(c) {
    document.getElementById("count-unread-flagged").textContent = c.unread_flagged;
    document.getElementById("count-unread").textContent = c.unread;
    document.getElementById("count-total").textContent = c.total;
  }

  function fetchPage(after, isPoll) {
    var p = new URLSearchParams(params);
    if (after) p.set("cursor", after);
    if (isPoll) p.set("poll", "true");
    return fetch("/api/v1/worklist?" + p.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/login?next=/worklist"); throw new Error("logged out"); }
        if (!r.ok) return r.json().then(function (j) { throw new Error(j.reason || ("HTTP " + r.status)); });
        return r.json();
      });
  }

  function refresh(isPoll) {
    // the first page again; pages loaded with "Load more" are kept until the user reloads
    if (extraPages) return Promise.resolve();
    return fetchPage(null, isPoll).then(function (page) {
      var keep = items[selected] && items[selected].study_id;
      var changed = JSON.stringify(page.items) !== JSON.stringify(items);
      counts(page.counts);
      if (changed) {
        items = page.items; cursor = page.next_cursor;
        var idx = items.findIndex(function (it) { return it.study_id === keep; });
        if (idx >= 0) selected = idx;
        render();
      }
      updated.textContent = "Updated " + new Date().toLocaleTimeString();
    }).catch(function (err) { updated.textContent = "Not updated: " + err.message; });
  }

  more.addEventListener("click", function () {
    fetchPage(cursor).then(function (page) {
      items = items.concat(page.items); cursor = page.next_cursor; extraPages = true; render();
    });
  });

  document.addEventListener("keydown", function (e) {
    var t = e.target.tagName;
    if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "j") { select(selected + 1); e.preventDefault(); }
    else if (e.key === "k") { select(selected - 1); e.preventDefault(); }
    else if (e.key === "Enter") { open(); e.preventDefault(); }
  });

  refresh(false).then(function () { root.dataset.ready = "1"; });
  setInterval(function () { refresh(true); }, pollMs);
})();
