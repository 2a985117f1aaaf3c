// Study viewer: zoom (wheel, buttons), pan (drag), window/level on the original pixels (16-bit for DICOM,
// else the stored 8-bit image), heatmap overlay per model with an opacity slider, the lung contour of the lung
// segmenter (a transparent PNG drawn on top). Plain canvas, no library.
(function () {
  "use strict";
  var root = document.getElementById("viewer");
  if (!root) return;
  var canvas = document.getElementById("viewer-canvas");
  var ctx = canvas.getContext("2d");
  var center = document.getElementById("wl-center");
  var width = document.getElementById("wl-width");
  var wlText = document.getElementById("wl-value");
  var opacity = document.getElementById("heat-opacity");
  var heatSelect = document.getElementById("heat-select");
  var info = document.getElementById("viewer-info");

  var px = null; // Uint16Array or Uint8ClampedArray of gray values, row-major
  var w = 0, h = 0, maxValue = 255;
  var base = document.createElement("canvas"); // the image after window/level, full resolution
  var heat = document.createElement("canvas"); // the selected heatmap, coloured, CAM resolution
  var heatOn = false;
  var lungsBox = document.getElementById("lungs-toggle");
  var lungs = null; // the lung contour picture (Image), loaded on first use
  var zoom = 1, tx = 0, ty = 0, fitted = false;
  var defaultWindow = [128, 256]; // level, window of a fresh view (the file's percentiles for 16-bit pixels)

  // colour map of the heatmaps: blue -> cyan -> yellow -> red (a "jet"-like ramp), t in [0, 1]
  function ramp(t) {
    var r = Math.max(0, Math.min(1, 1.5 - Math.abs(4 * t - 3)));
    var g = Math.max(0, Math.min(1, 1.5 - Math.abs(4 * t - 2)));
    var b = Math.max(0, Math.min(1, 1.5 - Math.abs(4 * t - 1)));
    return [255 * r, 255 * g, 255 * b];
  }

  function applyWindow() {
    if (!px) return;
    var c = Number(center.value), wd = Math.max(1, Number(width.value));
    var lo = c - wd / 2, scale = 255 / wd;
    base.width = w; base.height = h;
    var bctx = base.getContext("2d");
    var img = bctx.createImageData(w, h), d = img.data;
    for (var i = 0, j = 0; i < px.length; i++, j += 4) {
      var v = (px[i] - lo) * scale;
      v = v < 0 ? 0 : v > 255 ? 255 : v;
      d[j] = d[j + 1] = d[j + 2] = v; d[j + 3] = 255;
    }
    bctx.putImageData(img, 0, 0);
    wlText.textContent = "W " + Math.round(wd) + " / L " + Math.round(c);
    root.dataset.window = Math.round(c) + "," + Math.round(wd);
    draw();
  }

  function fit() {
    var s = Math.min(canvas.width / w, canvas.height / h);
    zoom = s; tx = (canvas.width - w * s) / 2; ty = (canvas.height - h * s) / 2;
  }

  function draw() {
    if (!px) return;
    if (!fitted) { fit(); fitted = true; }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(zoom, 0, 0, zoom, tx, ty);
    ctx.imageSmoothingEnabled = zoom < 1;
    ctx.drawImage(base, 0, 0);
    if (heatOn && Number(opacity.value) > 0) {
      ctx.globalAlpha = Number(opacity.value) / 100;
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(heat, 0, 0, w, h);
      ctx.globalAlpha = 1;
    }
    if (lungsBox && lungsBox.checked && lungs && lungs.complete) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(lungs, 0, 0, w, h);
    }
    root.dataset.zoom = zoom.toFixed(3);
  }

  function setRange(c, wd) {
    center.min = 0; center.max = maxValue; width.min = 1; width.max = maxValue + 1;
    center.value = c; width.value = wd;
  }

  function loadOriginal(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error("original pixels: HTTP " + r.status);
      w = Number(r.headers.get("X-Width")); h = Number(r.headers.get("X-Height"));
      var c = Number(r.headers.get("X-Window-Center")), wd = Number(r.headers.get("X-Window-Width"));
      return r.arrayBuffer().then(function (buf) {
        px = new Uint16Array(buf);
        maxValue = 0;
        for (var i = 0; i < px.length; i++) if (px[i] > maxValue) maxValue = px[i];
        setRange(c, wd);
        defaultWindow = [c, wd];
        info.textContent = "Original DICOM pixels, 16-bit (" + w + "x" + h + ", max " + maxValue + ")";
        root.dataset.bits = "16";
      });
    });
  }

  function loadImage(url) {
    return new Promise(function (resolve, reject) {
      var im = new Image();
      im.onload = function () {
        w = im.naturalWidth; h = im.naturalHeight;
        var c2 = document.createElement("canvas"); c2.width = w; c2.height = h;
        var c2x = c2.getContext("2d"); c2x.drawImage(im, 0, 0);
        var d = c2x.getImageData(0, 0, w, h).data;
        px = new Uint8ClampedArray(w * h);
        for (var i = 0; i < px.length; i++) px[i] = d[4 * i];
        maxValue = 255; setRange(128, 256);
        info.textContent = "Stored 8-bit image (" + w + "x" + h + ")";
        root.dataset.bits = "8";
        resolve();
      };
      im.onerror = function () { reject(new Error("image did not load")); };
      im.src = url;
    });
  }

  function loadHeat(url) {
    if (!url) { heatOn = false; draw(); return; }
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (j) {
      var cam = j.cam, ch = cam.length, cw = cam[0].length;
      heat.width = cw; heat.height = ch;
      var hctx = heat.getContext("2d"), img = hctx.createImageData(cw, ch), d = img.data;
      for (var y = 0; y < ch; y++) for (var x = 0; x < cw; x++) {
        var t = cam[y][x], k = 4 * (y * cw + x), rgb = ramp(t);
        d[k] = rgb[0]; d[k + 1] = rgb[1]; d[k + 2] = rgb[2]; d[k + 3] = 255 * Math.min(1, 0.25 + t);
      }
      hctx.putImageData(img, 0, 0);
      heatOn = true; root.dataset.heat = j.model + ":" + j.heat_class; draw();
    });
  }

  // interaction: wheel zooms about the cursor; drag pans; shift+drag (or right drag) changes window/level
  var drag = null;
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    var f = e.deltaY < 0 ? 1.15 : 1 / 1.15, r = canvas.getBoundingClientRect();
    var mx = (e.clientX - r.left) * canvas.width / r.width, my = (e.clientY - r.top) * canvas.height / r.height;
    tx = mx - (mx - tx) * f; ty = my - (my - ty) * f; zoom *= f; draw();
  }, { passive: false });
  canvas.addEventListener("contextmenu", function (e) { e.preventDefault(); });
  canvas.addEventListener("mousedown", function (e) {
    drag = { x: e.clientX, y: e.clientY, wl: e.shiftKey || e.button === 2, c: Number(center.value), wd: Number(width.value) };
  });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (e) {
    if (!drag) return;
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (drag.wl) {
      var step = (maxValue + 1) / 512;
      width.value = Math.max(1, drag.wd + dx * step); center.value = drag.c + dy * step; applyWindow();
    } else {
      tx += dx; ty += dy; drag.x = e.clientX; drag.y = e.clientY; draw();
    }
  });
  center.addEventListener("input", applyWindow);
  width.addEventListener("input", applyWindow);
  opacity.addEventListener("input", draw);
  heatSelect.addEventListener("change", function () { loadHeat(heatSelect.value); });
  if (lungsBox) {
    lungsBox.addEventListener("change", function () {
      if (lungsBox.checked && !lungs) {
        lungs = new Image();
        lungs.onload = function () { root.dataset.lungs = "1"; draw(); };
        lungs.onerror = function () { info.textContent = "Viewer: the lung contour did not load"; };
        lungs.src = lungsBox.dataset.src;
      }
      draw();
    });
  }
  document.getElementById("zoom-in").addEventListener("click", function () { zoom *= 1.25; draw(); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoom /= 1.25; draw(); });
  document.getElementById("zoom-reset").addEventListener("click", function () {
    fit(); center.value = defaultWindow[0]; width.value = defaultWindow[1];
    applyWindow();
  });

  var start = root.dataset.original ? loadOriginal(root.dataset.original) : loadImage(root.dataset.image);
  start.then(function () {
    applyWindow();
    root.dataset.ready = "1";
    if (heatSelect.value) loadHeat(heatSelect.value);
  }).catch(function (err) { info.textContent = "Viewer: " + err.message; });
})();
