// Upload page: camera / gallery on phones, drag-and-drop on desktops; POST /api/v1/predict then open the study page.
(function () {
  "use strict";
  var drop = document.getElementById("drop");
  var status = document.getElementById("status");
  var busy = false;

  function show(msg, isError) {
    status.textContent = msg;
    status.className = isError ? "notice error" : "notice";
  }

  function send(file) {
    if (!file || busy) return;
    busy = true;
    show("Analysing " + file.name + " ...", false);
    var body = new FormData();
    body.append("file", file, file.name);
    fetch("/api/v1/predict", { method: "POST", body: body })
      .then(function (r) {
        return r.json().then(function (j) { return { ok: r.ok, status: r.status, body: j }; });
      })
      .then(function (res) {
        busy = false;
        if (res.ok) {
          window.location.assign(res.body.page_url + (res.body.duplicate ? "?duplicate=1" : ""));
        } else {
          show("Refused (" + res.status + "): " + (res.body.reason || res.body.error), true);
        }
      })
      .catch(function (e) { busy = false; show("Upload failed: " + e, true); });
  }

  ["camera", "file"].forEach(function (id) {
    var input = document.getElementById(id);
    input.addEventListener("change", function () { send(input.files[0]); input.value = ""; });
  });
  ["dragenter", "dragover"].forEach(function (ev) {
    drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (ev) {
    drop.addEventListener(ev, function (e) { e.preventDefault(); drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) {
    if (e.dataTransfer && e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
  });
  document.addEventListener("dragover", function (e) { e.preventDefault(); });
  document.addEventListener("drop", function (e) { e.preventDefault(); });
})();
