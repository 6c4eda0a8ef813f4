// xr2ct reader kit: the three-plane CT viewer. A volume arrives as one PNG sprite sheet of its
// axial slices (8-bit over the stored HU window) and is decoded into memory once.
const XR2CT = (function () {
  "use strict";

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (k === "class") e.className = v;
      else if (v !== false && v !== null && v !== undefined) e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined)
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    return e;
  }
  const WINDOWS = [
    { name: "Stored range", level: null, width: null },
    { name: "PE (L 100 / W 700)", level: 100, width: 700 },
    { name: "Mediastinum (L 40 / W 400)", level: 40, width: 400 },
  ];

  // ---------- volumes: one PNG sprite of axial slices → Uint8Array (z, y, x) ----------
  const decoded = {};
  function loadVolume(id, v) {
    if (!decoded[id]) decoded[id] = new Promise((resolve, reject) => {
      const [D, H, W] = v.shape;
      const img = new Image();
      img.onload = () => {
        const c = document.createElement("canvas");
        c.width = img.width; c.height = img.height;
        const ctx = c.getContext("2d", { willReadFrequently: true });
        ctx.drawImage(img, 0, 0);
        const px = ctx.getImageData(0, 0, img.width, img.height).data;
        const out = new Uint8Array(D * H * W);
        for (let z = 0; z < D; z++) {
          const r = Math.floor(z / v.cols), col = z % v.cols;
          for (let y = 0; y < H; y++) {
            const src = ((r * H + y) * img.width + col * W) * 4, dst = (z * H + y) * W;
            for (let x = 0; x < W; x++) out[dst + x] = px[src + 4 * x];
          }
        }
        resolve({ D, H, W, data: out });
      };
      img.onerror = () => reject(new Error("cannot decode volume " + id));
      img.src = v.sprite;
    });
    return decoded[id];
  }

  function lut(storedHU, index) {  // 8-bit stored value → display grey for window `index`
    const [lo, hi] = storedHU, w = WINDOWS[index] || WINDOWS[0];
    const a = w.level === null ? lo : w.level - w.width / 2;
    const b = w.level === null ? hi : w.level + w.width / 2;
    const t = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) t[v] = Math.round(255 * ((lo + (v / 255) * (hi - lo)) - a) / (b - a));
    return t;
  }

  // Radiological display: axial seen from the feet (patient right on image left, anterior up),
  // coronal from the front (head up, right on the left), sagittal from the left (head up,
  // anterior on the left). Arrays are (z inferior→superior, y anterior→posterior, x right→left).
  const PLANE_DEFS = {
    axial: { title: "Axial", marks: ["R", "L", "A", "P"],
             dims: (v) => [v.W, v.H, v.D], hint: "1 = top of the volume" },
    coronal: { title: "Coronal", marks: ["R", "L", "S", "I"],
               dims: (v) => [v.W, v.D, v.H], hint: "1 = front" },
    sagittal: { title: "Sagittal", marks: ["A", "P", "S", "I"],
                dims: (v) => [v.H, v.D, v.W], hint: "1 = patient's right" },
  };

  function sample(v, plane, s, col, row) {  // s: 0-based slice index along the plane's normal
    const { D, H, W, data } = v;
    if (plane === "axial") return data[((D - 1 - s) * H + row) * W + col];
    if (plane === "coronal") return data[((D - 1 - row) * H + s) * W + col];
    return data[((D - 1 - row) * H + col) * W + s];
  }

  // `settings` ({window, crosshair}) is shared by every viewer; `onChange` saves it.
  function viewer(volumeId, volume, storedHU, settings, onChange) {
    const root = el("div", { class: "viewer", "data-volume": volumeId });
    const status = el("span", { class: "dim" }, "decoding volume…");
    const winSel = el("select", { "aria-label": "window", on: { change: () => {
      settings.window = +winSel.value; onChange(); table = lut(storedHU, settings.window); drawAll(); } } },
      WINDOWS.map((w, i) => el("option", { value: i, selected: i === settings.window }, w.name)));
    const cross = el("input", { type: "checkbox", checked: settings.crosshair, on: { change: () => {
      settings.crosshair = cross.checked; onChange(); drawAll(); } } });
    root.append(el("div", { class: "viewer-tools" },
      el("label", {}, "Window ", winSel), el("label", {}, cross, " crosshair ", el("kbd", {}, "C")),
      el("span", { class: "dim" }, "wheel or ↑ ↓ scroll · click a plane to move the others"), status));
    const planes = el("div", { class: "planes" });
    root.append(planes);
    let vol = null, table = lut(storedHU, settings.window), active = "axial";
    const ui = {}, pos = {};

    function draw(p) {
      const u = ui[p], [cols, rows, n] = PLANE_DEFS[p].dims(vol);
      const img = u.ctx.createImageData(cols, rows), d = img.data;
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
        const g = table[sample(vol, p, pos[p], c, r)], k = (r * cols + c) * 4;
        d[k] = d[k + 1] = d[k + 2] = g; d[k + 3] = 255;
      }
      u.ctx.putImageData(img, 0, 0);
      u.slider.value = pos[p] + 1;
      u.label.textContent = `${pos[p] + 1} / ${n}`;
      u.canvas.dataset.slice = pos[p] + 1;
      // crosshair: where the other two planes cut this one
      const [hx, hy] = p === "axial" ? [pos.sagittal, pos.coronal]
        : p === "coronal" ? [pos.sagittal, pos.axial] : [pos.coronal, pos.axial];
      u.svg.innerHTML = settings.crosshair
        ? `<line x1="${hx + .5}" y1="0" x2="${hx + .5}" y2="${rows}" stroke="#4da3ff" stroke-width="${cols / 300}"/>` +
          `<line x1="0" y1="${hy + .5}" x2="${cols}" y2="${hy + .5}" stroke="#4da3ff" stroke-width="${cols / 300}"/>`
        : "";
    }
    function drawAll() { if (vol) for (const p in ui) draw(p); }
    function setSlice(p, s) {
      const n = PLANE_DEFS[p].dims(vol)[2];
      pos[p] = Math.max(0, Math.min(n - 1, s));
      drawAll();
    }
    function activate(p) {
      active = p;
      for (const q in ui) ui[q].box.classList.toggle("active", q === p);
    }
    root.scrollSlices = (delta) => { if (vol) setSlice(active, pos[active] + delta); };
    root.redraw = () => { table = lut(storedHU, settings.window); winSel.value = settings.window; cross.checked = settings.crosshair; drawAll(); };

    for (const p of Object.keys(PLANE_DEFS)) {
      const def = PLANE_DEFS[p];
      const canvas = el("canvas", { "data-plane": p });
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("preserveAspectRatio", "none");
      const [ml, mr, mt, mb] = def.marks;
      const frame = el("div", { class: "frame" }, canvas, svg,
        el("span", { class: "ori l" }, ml), el("span", { class: "ori r" }, mr),
        el("span", { class: "ori t" }, mt), el("span", { class: "ori b" }, mb));
      const label = el("span", { class: "slice-label", "data-plane": p });
      const slider = el("input", { type: "range", min: 1, value: 1, "aria-label": def.title + " slice",
                                   "data-plane": p, on: { input: () => setSlice(p, +slider.value - 1) } });
      const box = el("div", { class: "plane" + (p === active ? " active" : "") },
        el("div", { class: "plane-title" }, el("span", {}, def.title),
           el("span", { title: def.hint }, "slice ", label)), frame, slider);
      let wheel = 0;  // a mouse notch (~100 px) is one slice; a trackpad's small deltas add up
      frame.addEventListener("wheel", (ev) => {
        ev.preventDefault(); activate(p);
        const dy = ev.deltaY * (ev.deltaMode === 1 ? 40 : ev.deltaMode === 2 ? 800 : 1);
        wheel = Math.abs(dy) >= 50 ? Math.sign(dy) * 50 : wheel + dy;
        const steps = Math.trunc(wheel / 50);
        wheel -= steps * 50;
        if (vol && steps) setSlice(p, pos[p] + steps);
      }, { passive: false });
      frame.addEventListener("mouseenter", () => activate(p));
      frame.addEventListener("click", (ev) => {  // move the other planes to the clicked point
        if (!vol) return;
        activate(p);
        const r = canvas.getBoundingClientRect(), [cols, rows] = def.dims(vol);
        const c = Math.floor((ev.clientX - r.left) / r.width * cols);
        const row = Math.floor((ev.clientY - r.top) / r.height * rows);
        if (p === "axial") { pos.sagittal = c; pos.coronal = row; }
        else if (p === "coronal") { pos.sagittal = c; pos.axial = row; }
        else { pos.coronal = c; pos.axial = row; }
        for (const q in pos) pos[q] = Math.max(0, Math.min(PLANE_DEFS[q].dims(vol)[2] - 1, pos[q]));
        drawAll();
      });
      ui[p] = { canvas, ctx: canvas.getContext("2d"), svg, label, slider, box };
      planes.append(box);
    }
    loadVolume(volumeId, volume).then((v) => {
      vol = v;
      for (const p in ui) {
        const [cols, rows, n] = PLANE_DEFS[p].dims(v);
        ui[p].canvas.width = cols; ui[p].canvas.height = rows;
        ui[p].svg.setAttribute("viewBox", `0 0 ${cols} ${rows}`);
        ui[p].slider.max = n;
        pos[p] = Math.floor(n / 2);
      }
      status.textContent = "";
      root.dataset.ready = "1";
      drawAll();
    }, (err) => { status.textContent = err.message; });
    return root;
  }

  return { el, WINDOWS, viewer };
})();
