// The labeling page. One document-level key listener; the image on screen is
// buf[0]; the next ones are already fetched and decoded, so a keypress swaps
// images without a round trip. Writes go out one at a time, in order, retried
// until the server has them (it journals each before answering).
// Review mode (/review) is the same page: y = the model is right, n then 1-4 =
// it is wrong and this is right, g cycles Grad-CAM overlays of the flags shown.
(() => {
  const PRELOAD = 3;
  const S = { buf: [], hist: [], keys: [], inflight: new Set(), chain: Promise.resolve(), pending: 0, fetching: false, done: false, cam: 0, correcting: false };
  window.__labeler = S;
  S.paints = [];  // keypress -> next image painted, ms (read by the benchmark)
  const $ = (id) => document.getElementById(id);
  const stage = $("stage");
  const MODE = stage.dataset.mode || "label";
  const REVIEW = MODE === "review";
  const KEYS = REVIEW ? "1234suyng" : "1234su";
  const SAYS = { "1": "biopsy tool", "2": "mag view", "3": "neither", "4": "both" };

  function uuid() {
    return (crypto.randomUUID && crypto.randomUUID()) ||
      "xxxxxxxxxxxx4xxxyxxxxxxxxxxxxxxx".replace(/[xy]/g, (c) => ((Math.random() * 16) | 0).toString(16));
  }
  function preload(item) {
    const im = new Image();
    im.alt = "mammogram";
    im.decoding = "async";
    im.src = item.url;
    item.img = im;
    item.ready = im.decode().catch(() => {});
    item.cams = {};
    if (S.cam) camImage(item);
    return item;
  }
  function camFlag(item) {  // the flag whose heatmap is on, or null
    const flags = item.cam_flags || [];
    return S.cam && flags.length ? flags[Math.min(S.cam, flags.length) - 1] : null;
  }
  function camImage(item) {  // the Grad-CAM overlay, fetched once per image and flag
    const flag = camFlag(item);
    if (!flag) return null;
    if (!item.cams[flag]) {
      const im = new Image();
      im.alt = `Grad-CAM: ${flag}`;
      im.src = `/cam?id=${encodeURIComponent(item.id)}&flag=${flag}&model=${encodeURIComponent(item.model_version || "")}`;
      const entry = { img: im, done: false };
      entry.ready = im.decode().then(() => true, () => false).then((ok) => { entry.done = true; return ok; });
      item.cams[flag] = entry;
    }
    return item.cams[flag];
  }
  function text(el, s) { el.textContent = s; }
  const COMPUTING = " (computing…)";

  function show(t0) {
    const item = S.buf[0];
    if (!item) {
      stage.dataset.id = "";
      const msg = document.createElement("div");
      msg.className = "msg";
      msg.textContent = S.done ? "Nothing left to label. Thank you!" : "Loading…";
      stage.replaceChildren(msg);
      text($("facts"), "");
      text($("pred"), "");
      return;
    }
    stage.dataset.id = item.id;
    const cam = camImage(item);
    stage.replaceChildren(item.img);
    if (cam) {
      cam.ready.then((ok) => {
        if (S.buf[0] !== item || camImage(item) !== cam) return;  // moved on meanwhile
        if (ok) stage.replaceChildren(cam.img);
        else warn("no Grad-CAM for this image (is torch installed where the labeler runs?)");
        text($("pred"), $("pred").textContent.replace(COMPUTING, ok ? "" : " (none)"));
      });
    }
    const facts = [item.vendor, item.view, item.modifiers].filter(Boolean);
    if (item.header_hints.length) facts.push("header: " + item.header_hints.join(", "));
    text($("facts"), facts.join(" · "));
    const p = item.prediction;
    let pred = p ? `model ${item.model_version}: biopsy ${p.biopsy.toFixed(2)} · mag ${p.mag.toFixed(2)}` : "";
    if (REVIEW && p) {
      const t = item.thresholds || {};
      const prob = (f) => {  // which side of the threshold, with the digits that tell
        const v = p[f], th = t[f];
        if (th === undefined) return `${f} ${v.toFixed(2)}`;
        let d = 2;
        while (d < 5 && v.toFixed(d) === th.toFixed(d)) d++;
        return v >= th ? `${f} ${v.toFixed(d)} ≥ ${th.toFixed(d)}: flagged`
                       : `${f} ${v.toFixed(d)} < ${th.toFixed(d)}: not flagged`;
      };
      pred = `model ${item.model_version} says ${SAYS[item.model_key]}: ${prob("biopsy")} · ${prob("mag")} · ${item.reason === "unflagged" ? "random check" : item.reason}`;
      if (cam) pred += ` · Grad-CAM: ${camFlag(item)}${cam.done ? "" : COMPUTING}`;  // seconds when made on demand
      if (S.correcting) pred += " · which is right? 1 biopsy · 2 mag · 3 neither · 4 both (Esc: back)";
    }
    text($("pred"), pred);
    stage.classList.toggle("correcting", S.correcting);
    if (t0 !== undefined) {
      item.ready.then(() => requestAnimationFrame(() => setTimeout(() => {
        S.paints.push(performance.now() - t0);
      }, 0)));
    }
  }

  function stats(st, polled) {
    if (!st) return;
    text($("labeled"), `${st.labeled} labeled`);
    text($("remaining"), REVIEW ? `${st.to_review} to review` : `${st.remaining} to go`);
    text($("retrain"), st.model_version
      ? `${st.until_retrain} until retrain · model ${st.model_version}`
      : `${st.until_retrain} until the first model`);
    // A label is safe once the server answers (it journals first); say so only
    // when the database has been busy long enough to notice.
    if (st.write_error || (polled && st.pending_writes)) {
      warn(`${st.pending_writes} label(s) saved, waiting for the database (busy, retrying)`);
    } else if (polled || !st.pending_writes) warn("");
  }
  function warn(msg, bad) {
    const w = $("warn");
    const local = S.pending ? `${S.pending} sending…` : "";
    w.textContent = [msg, local].filter(Boolean).join(" · ");
    w.className = bad ? "bad" : "";
  }

  async function send(url, body) {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(url, {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        });
        if (r.ok) return await r.json();
        if (r.status === 401) { location.href = "/login"; return null; }
        if (r.status >= 400 && r.status < 500) {
          const j = await r.json().catch(() => ({}));
          warn(`not saved: ${j.error || r.status}`, true);
          return null;
        }
      } catch (e) { /* network: retry */ }
      warn("server unreachable, retrying…", true);
      await new Promise((res) => setTimeout(res, Math.min(250 * 2 ** attempt, 5000)));
    }
  }
  // Writes not yet answered are also kept in localStorage: a reload, a closed tab or
  // a sign-in redirect replays them (the server stores each event id once).
  const OUTBOX = "mammo-labeler-outbox";
  const outbox = () => JSON.parse(localStorage.getItem(OUTBOX) || "[]");
  const keep = (list) => localStorage.setItem(OUTBOX, JSON.stringify(list));
  function post(url, body) {  // in order, one at a time, never dropped
    S.pending++;
    keep([...outbox(), { url, body }]);
    const p = S.chain.then(() => send(url, body)).finally(() => {
      S.pending--;
      keep(outbox().filter((o) => o.body.event_id !== body.event_id));
    });
    S.chain = p.then((j) => { if (j) stats(j.stats); }, () => {});
    return p;
  }
  window.addEventListener("beforeunload", (e) => {
    if (S.pending) { e.preventDefault(); e.returnValue = ""; }
  });

  async function refill() {
    if (S.fetching || S.done) return;
    S.fetching = true;
    try {
      while (S.buf.length < PRELOAD + 1) {
        const want = PRELOAD + 1 - S.buf.length;
        await S.chain;  // the server must see our labels before choosing more
        // Labels still on their way must not come back as "next".
        const have = [...S.buf.map((i) => i.id), ...S.inflight];
        const j = await send("/api/next", { n: want, have, mode: MODE });
        if (!j) break;
        stats(j.stats);
        const fresh = j.items.filter((i) => !S.buf.some((b) => b.id === i.id) && !S.inflight.has(i.id));
        fresh.forEach((i) => S.buf.push(preload(i)));
        if (S.buf.length && !stage.dataset.id) show();
        drain();
        if (j.items.length < want) { S.done = !S.buf.length; break; }
      }
    } finally {
      S.fetching = false;
      if (!S.buf.length) show();
    }
  }

  // Keys are handled in order; one pressed before the next image arrived waits for it.
  function press(key, t0) { S.keys.push([key, t0]); drain(); }
  function drain() {
    while (S.keys.length) {
      const [key, t0] = S.keys[0];
      if (key !== "u" && !S.buf.length) {
        if (!S.done) { refill(); return; }
        S.keys.shift();  // nothing left to label
        continue;
      }
      S.keys.shift();
      if (key === "u") undo(t0);
      else if (REVIEW) review(key, t0);
      else act(key, t0);
    }
  }
  function review(key, t0) {
    const item = S.buf[0];
    if (key === "g") {  // off -> each flag's heatmap -> off
      const n = (item.cam_flags || []).length;
      if (!n) warn("no model prediction for this image: nothing to explain");
      S.cam = n ? (S.cam + 1) % (n + 1) : 0;
      S.buf.forEach((b) => camImage(b));
      show();
    } else if (key === "n" || key === "escape") {
      S.correcting = key === "n" && !S.correcting;
      show();
    } else if (key === "y") {
      if (S.correcting) return;  // "n" was pressed: the answer is a label key now
      if (item.model_key) act(item.model_key, t0);
      else warn("no model prediction for this image: label it with 1-4");
    } else act(key, t0);
  }

  function act(key, t0) {
    const item = S.buf.shift();
    item.event_id = uuid();
    S.hist.push(item);
    S.inflight.add(item.id);
    S.correcting = false;
    S.cam = S.cam ? 1 : 0;  // the heatmap stays on, for the next image's first flag
    post("/api/label", { event_id: item.event_id, id: item.id, key, mode: MODE, model_version: item.model_version })
      .finally(() => S.inflight.delete(item.id));
    show(t0);
    refill();
  }
  function undo(t0) {
    const local = S.hist.pop();  // undo exactly what this page put back on screen
    S.correcting = false;
    const req = post("/api/undo", local ? { event_id: uuid(), retracts: local.event_id, mode: MODE } : { event_id: uuid(), mode: MODE });
    if (local) {
      S.buf.unshift(local);
      show(t0);
      return;
    }
    req.then((j) => {  // older than this page: the server says which image comes back
      if (j && j.item && !S.buf.some((b) => b.id === j.item.id)) {
        S.buf.unshift(preload(j.item));
        S.done = false;
        show(t0);
        drain();
      }
    });
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;  // a held key labels once
    const t = e.target;
    if (t && t.closest && t.closest("input, textarea, select, [contenteditable]")) return;
    const k = e.key.toLowerCase();
    const t0 = performance.now();
    if ((k.length === 1 && KEYS.includes(k)) || (REVIEW && k === "escape")) {
      e.preventDefault();
      press(k, t0);
    }
  }
  document.addEventListener("keydown", onKey);
  document.querySelectorAll("#actions button[data-key]").forEach((b) => {
    b.addEventListener("click", () => {
      press(b.dataset.key, performance.now());
      b.blur();
    });
  });
  setInterval(async () => {  // keeps the shown and preloaded images leased to us
    try {
      const r = await fetch("/api/renew", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ have: S.buf.map((i) => i.id), mode: MODE }),
      });
      if (r.ok) stats(await r.json(), true);
    } catch (e) { /* the next POST reports */ }
  }, 3000);
  const left = outbox();  // what an earlier page could not deliver
  if (left.length) { keep([]); left.forEach((o) => post(o.url, o.body)); }
  refill();
})();
