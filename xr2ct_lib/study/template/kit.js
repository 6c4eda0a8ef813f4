// xr2ct reader-study kit: runs from disk, offline; answers live in localStorage and leave as CSV.
(function () {
  "use strict";

  const { el, WINDOWS, viewer: volumeViewer } = XR2CT;  // viewer.js
  const DATA = JSON.parse(document.getElementById("kit-data").textContent);
  const KIT = DATA.kit;
  const STORE = "xr2ct-reader-kit-" + KIT.kit_id;
  const PART_ORDER = ["realism", "pe_cxr", "pe_ctpa"];
  const PARTS = {
    realism: {
      letter: "A", title: "Real or generated?",
      intro: "Each case is one CT pulmonary angiogram, real or generated from a chest X-ray. " +
        "Scroll through it and decide which it is. Then rate its anatomic correctness and " +
        "its consistency from slice to slice.",
    },
    pe_cxr: {
      letter: "B", title: "Phase 1 · PE from the chest X-ray",
      intro: "Each case is one chest X-ray of a patient suspected of pulmonary embolism. " +
        "Decide: pulmonary embolism, or no pulmonary embolism?",
    },
    pe_ctpa: {
      letter: "C", title: "Phase 2 · PE from the X-ray and its generated CTPA",
      intro: "The same patients again, now with a CTPA generated from each X-ray. " +
        "Decide again: pulmonary embolism, or not?",
    },
  };
  const LIKERT = {
    anatomy: { label: "Anatomic correctness", lo: "1 grossly wrong", hi: "5 fully correct" },
    consistency: { label: "Slice consistency", lo: "1 severe inconsistencies", hi: "5 none" },
  };
  const pe = Object.fromEntries(DATA.pe_cases.map((c) => [c.code, c]));
  const vols = Object.fromEntries(DATA.volumes_task.map((c) => [c.code, c]));
  const app = document.getElementById("app");

  // ---------- state (localStorage, so a reload loses nothing) ----------
  function fresh() {
    return { reader: "", answers: { realism: {}, pe_cxr: {}, pe_ctpa: {} },
             locked: { realism: false, pe_cxr: false, pe_ctpa: false },
             page: "start", index: 0, window: 0, crosshair: false };
  }
  let state = fresh();
  try {
    const saved = JSON.parse(localStorage.getItem(STORE) || "null");
    if (saved && saved.answers) state = Object.assign(fresh(), saved);
  } catch (e) { /* unreadable storage: start fresh */ }
  function save() {
    try { localStorage.setItem(STORE, JSON.stringify(state)); } catch (e) { /* private mode */ }
  }

  // ---------- helpers ----------
  const codes = (part) => KIT.tasks[part];
  function isComplete(part, code) {
    const a = state.answers[part][code];
    if (!a || !a.answer) return false;
    return part !== "realism" || (a.anatomy && a.consistency);
  }
  const nDone = (part) => codes(part).filter((c) => isComplete(part, c)).length;
  function available(part) {  // parts are taken in order; a finished part is locked
    const i = PART_ORDER.indexOf(part);
    return i === 0 || state.locked[PART_ORDER[i - 1]];
  }
  function answer(part, code) {
    if (!state.answers[part][code]) state.answers[part][code] = { seconds: 0 };
    return state.answers[part][code];
  }

  const viewer = (id) => volumeViewer(id, DATA.volumes[id], KIT.window_hu, state, save);

  function xray(code, cls) {
    const box = el("div", { class: "xray " + cls },
      el("img", { src: DATA.xrays[pe[code].xray], alt: "chest X-ray " + code, title: "click to enlarge",
                  on: { click: () => box.classList.toggle("zoom") } }),
      el("span", { class: "dim" }, "PA chest X-ray · patient right on image left · click to enlarge"));
    return box;
  }

  // ---------- pages ----------
  let current = null;  // { part, code, viewer, since }

  function tick() {  // add the time spent on the open case to its answer
    if (!current) return;
    const a = state.answers[current.part][current.code], now = Date.now();
    if (a && !state.locked[current.part]) a.seconds = (a.seconds || 0) + (now - current.since) / 1000;
    current.since = now;
    save();
  }
  function leaveCase() { tick(); current = null; }

  function go(page, index) {
    leaveCase();
    state.page = page; state.index = index || 0; save(); render();
    window.scrollTo(0, 0);
  }

  function renderBar() {
    const bar = document.getElementById("bar-parts");
    bar.replaceChildren(el("button", { class: state.page === "start" ? "current" : "",
                                       on: { click: () => go("start") } }, "Start"),
      ...PART_ORDER.map((p) => el("button", {
        class: state.page === p ? "current" : "", disabled: !state.reader || !available(p),
        "data-part": p, on: { click: () => go(p, 0) } },
        `${PARTS[p].letter} ${nDone(p)}/${codes(p).length}${state.locked[p] ? " ✓" : ""}`)));
    document.getElementById("bar-reader").textContent = state.reader ? "Reader: " + state.reader : "";
  }

  function renderStart() {
    const name = el("input", { type: "text", id: "reader-name", value: state.reader,
                               placeholder: "your name or initials" });
    const start = el("button", { class: "primary", id: "start", on: { click: () => {
      const v = name.value.trim();
      if (!v) { name.focus(); return; }
      state.reader = v; save();
      go(PART_ORDER.find((p) => !state.locked[p]) || "pe_ctpa", 0);
    } } }, state.reader ? "Continue" : "Start");
    const parts = PART_ORDER.map((p) => el("div", { class: "part" },
      el("button", { disabled: !state.reader || !available(p), on: { click: () => go(p, 0) } },
         `Part ${PARTS[p].letter}`),
      el("span", { class: "state " + (state.locked[p] ? "locked" : "dim") },
         state.locked[p] ? "finished ✓" : `${nDone(p)} of ${codes(p).length} answered`),
      el("span", {}, PARTS[p].title)));
    app.replaceChildren(
      el("div", { class: "panel" },
        el("h2", {}, KIT.title),
        el("p", {}, "This kit repeats the two short reader studies of the X-ray2CTPA paper " +
          "(Cahan et al., npj Digital Medicine 2025). It runs in this browser only; nothing is " +
          "sent anywhere. Your answers are kept in this browser until you download them."),
        KIT.about ? el("p", { class: "notice" }, KIT.about) : null,
        el("p", {}, "Cases are shown under random codes, in random order. The parts are taken " +
          "in order; finishing a part locks its answers, so that what you see later cannot " +
          "change them."),
        el("p", {}, el("label", {}, "Reader: ", name), " ", start)),
      el("div", { class: "panel" }, el("div", { class: "parts" }, parts)),
      el("div", { class: "panel" }, el("h3", {}, "Keyboard"),
        el("table", { class: "keys" }, [
          ["← →", "previous / next case"], ["↑ ↓ or wheel", "scroll the plane under the mouse"],
          ["P / N", "PE / no PE"], ["R / G", "real / generated"], ["W", "next window"],
          ["C", "crosshair on/off"]].map(([k, t]) => el("tr", {}, el("td", {}, el("kbd", {}, k)),
                                                          el("td", {}, t))))),
      el("div", { class: "panel" },
        el("p", {}, "When you are done, press ", el("b", {}, "Download responses (CSV)"),
           " and send the file to the organiser."),
        el("button", { id: "reset", on: { click: () => {
          if (confirm("Delete every answer stored by this kit in this browser?")) {
            localStorage.removeItem(STORE); state = fresh(); render();
          } } } }, "Clear all answers")));
  }

  function choiceButtons(part, code, opts) {
    const a = state.answers[part][code] || {};
    const locked = state.locked[part];
    return el("div", { class: "choices" }, opts.map(([value, text, key]) =>
      el("button", { class: a.answer === value ? "chosen" : "", "data-answer": value, disabled: locked,
                     on: { click: () => setAnswer(part, code, "answer", value) } },
         text, " ", el("kbd", {}, key))));
  }

  function likertRows(code) {
    const a = state.answers.realism[code] || {}, locked = state.locked.realism;
    const grid = el("div", { class: "likert" });
    for (const [field, def] of Object.entries(LIKERT)) {
      grid.append(el("span", {}, def.label));
      for (let v = 1; v <= 5; v++) grid.append(el("button", {
        class: a[field] === v ? "chosen" : "", "data-rating": field, "data-value": v, disabled: locked,
        on: { click: () => setAnswer("realism", code, field, v) } }, v));
      grid.append(el("span", {}), el("span", { class: "anchors" }, el("span", {}, def.lo), el("span", {}, def.hi)));
    }
    return grid;
  }

  function setAnswer(part, code, field, value) {
    if (state.locked[part]) return;
    const a = answer(part, code);
    a[field] = value;
    a.answered_at = new Date().toISOString();
    save();
    refreshAnswers();
  }

  function refreshAnswers() {  // redraw the answer panel and the nav, not the viewer
    if (!current) return;
    const { part, code } = current;
    document.getElementById("answer-slot").replaceChildren(answerPanel(part, code));
    document.getElementById("nav-slot").replaceChildren(navPanel(part));
    renderBar();
  }

  function answerPanel(part, code) {
    if (part === "realism") return el("div", { class: "answer" },
      el("b", {}, "Is this CTPA real or generated?"),
      choiceButtons(part, code, [["real", "Real", "R"], ["generated", "Generated", "G"]]),
      likertRows(code));
    return el("div", { class: "answer" },
      el("b", {}, "Pulmonary embolism?"),
      choiceButtons(part, code, [["pe", "PE", "P"], ["no_pe", "No PE", "N"]]));
  }

  function navPanel(part) {
    const list = codes(part), i = state.index, locked = state.locked[part];
    const finish = el("button", { class: "primary", id: "finish", disabled: locked || nDone(part) < list.length,
      on: { click: () => {
        if (!confirm(`Finish part ${PARTS[part].letter}? Its answers will be locked.`)) return;
        state.locked[part] = true; save();
        const next = PART_ORDER[PART_ORDER.indexOf(part) + 1];
        go(next || "start", 0);
      } } }, locked ? `Part ${PARTS[part].letter} finished ✓` : `Finish part ${PARTS[part].letter}`);
    return el("div", { class: "nav" },
      el("button", { id: "prev", disabled: i === 0, on: { click: () => go(part, i - 1) } }, "← Previous"),
      el("button", { id: "next", disabled: i === list.length - 1, on: { click: () => go(part, i + 1) } }, "Next →"),
      el("div", { class: "dots" }, list.map((c, k) => el("button", {
        class: (isComplete(part, c) ? "done" : "") + (k === i ? " here" : ""), title: c,
        on: { click: () => go(part, k) } }, k + 1))),
      el("span", { class: "dim" }, `${nDone(part)} of ${list.length} answered`), finish);
  }

  function renderCase(part) {
    const list = codes(part);
    const i = Math.max(0, Math.min(list.length - 1, state.index)), code = list[i];
    state.index = i;
    const slot = el("div", { id: "answer-slot" }, answerPanel(part, code));
    let body, v = null;
    if (part === "realism") body = [v = viewer(vols[code].volume), slot];
    else if (part === "pe_cxr") body = [xray(code, "big"), slot];
    else body = [el("div", { class: "column" }, xray(code, "side"), slot), v = viewer(pe[code].volume)];
    current = { part, code, viewer: v, since: Date.now() };
    if (!state.locked[part]) answer(part, code);
    app.replaceChildren(el("div", { class: "panel" },
      el("div", { class: "head" },
        el("h2", {}, `Part ${PARTS[part].letter} · ${PARTS[part].title}`),
        el("span", { class: "dim" }, `case ${i + 1} of ${list.length}`),
        el("span", { class: "code", id: "case-code" }, code),
        state.locked[part] ? el("span", { class: "locked" }, "finished: answers locked") : null),
      i === 0 ? el("p", { class: "dim" }, PARTS[part].intro) : null,
      el("div", { class: "case" }, body),
      el("div", { id: "nav-slot" }, navPanel(part))));
  }

  function render() {
    if (state.page !== "start" && (!state.reader || !available(state.page))) state.page = "start";
    renderBar();
    if (state.page === "start") renderStart(); else renderCase(state.page);
  }

  // ---------- CSV ----------
  function csvField(s) {
    s = s === undefined || s === null ? "" : String(s);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function toCSV() {
    const rows = [["kit_id", "reader", "task", "code", "answer", "anatomy", "consistency", "seconds", "answered_at"]];
    for (const part of PART_ORDER) for (const code of codes(part)) {
      const a = state.answers[part][code];
      if (!a || !a.answer) continue;
      rows.push([KIT.kit_id, state.reader, part, code, a.answer, a.anatomy || "", a.consistency || "",
                 (a.seconds || 0).toFixed(1), a.answered_at || ""]);
    }
    return rows.map((r) => r.map(csvField).join(",")).join("\r\n") + "\r\n";
  }
  document.getElementById("download").addEventListener("click", () => {
    tick();
    const missing = PART_ORDER.map((p) => codes(p).length - nDone(p)).reduce((a, b) => a + b, 0);
    if (missing && !confirm(`${missing} case(s) are not answered yet. Download anyway?`)) return;
    const blob = new Blob([toCSV()], { type: "text/csv;charset=utf-8" });
    const a = el("a", { href: URL.createObjectURL(blob),
      download: `responses-${(state.reader || "reader").replace(/[^A-Za-z0-9_-]+/g, "_")}-${KIT.kit_id}.csv` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });

  // ---------- keyboard ----------
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t.tagName === "INPUT" && t.type === "text") return;
    // a focused slider or menu keeps its own arrow keys
    if ((t.tagName === "INPUT" || t.tagName === "SELECT") && ev.key.startsWith("Arrow")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey || !current) return;
    const { part, code, viewer: v } = current, k = ev.key.toLowerCase();
    const last = codes(part).length - 1;
    if (k === "arrowright" && state.index < last) go(part, state.index + 1);
    else if (k === "arrowleft" && state.index > 0) go(part, state.index - 1);
    else if ((k === "arrowup" || k === "arrowdown") && v) v.scrollSlices(k === "arrowdown" ? 1 : -1);
    else if (k === "p" && part !== "realism") setAnswer(part, code, "answer", "pe");
    else if (k === "n" && part !== "realism") setAnswer(part, code, "answer", "no_pe");
    else if (k === "r" && part === "realism") setAnswer(part, code, "answer", "real");
    else if (k === "g" && part === "realism") setAnswer(part, code, "answer", "generated");
    else if (k === "w" && v) { state.window = (state.window + 1) % WINDOWS.length; save(); v.redraw(); }
    else if (k === "c" && v) { state.crosshair = !state.crosshair; save(); v.redraw(); }
    else return;
    ev.preventDefault();
  });
  window.addEventListener("beforeunload", tick);

  render();
})();
