// i2i-serve's page. It builds its controls from GET /v1/models (tensor kinds, never model
// names), sends one POST /v1/translate per translation asking for the JSON answer
// (Accept: application/json), and shows every picture at the photo's own pixel size.
// Every API call carries "Authorization: Bearer KEY" once a key is typed (kept in
// sessionStorage, for this tab only).

const $ = (id) => document.getElementById(id);
const KEY = "i2i-api-key";
const state = {
  info: null,         // GET /v1/models
  photo: null,        // the picture being translated (a Blob or File)
  photoName: "photo.png",
  extra: {},          // further image inputs (an exemplar) by name: Blob
  ticket: 0,          // the latest translation asked for; older answers are dropped
  timer: null,        // the debounce of live controls
  urls: [],           // object URLs of the current result, revoked when it is replaced
  pending: [],        // default pictures still arriving (a sample exemplar)
};

class ServerError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authorised(headers = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

// fetch with the key; a 4xx/5xx becomes a ServerError with the server's {"error": ...} text.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authorised(options.headers) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
    } catch { /* not JSON: keep the status line */ }
    throw new ServerError(response.status, message);
  }
  return response;
}

function say(text) {
  $("status").textContent = text;
}

function fail(err) {
  let text = err instanceof ServerError ? `The server answered ${err.status}: ${err.message}`
    : `The request failed: ${err.message}`;
  if (err.status === 401) {
    text += ". Type the server's key under \"API key\" and press \"Use key\".";
    $("key-box").open = true;
  }
  $("error").textContent = text;
  document.body.dataset.state = "error";
  say("Failed; the message is below.");
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function field(id, label, ...controls) {
  return element("div", { class: "field" }, element("label", { for: id }, label), ...controls);
}

function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(translate, ms);
}

// -- controls from the model's description ------------------------------------------------

async function load() {
  document.body.dataset.state = "loading";
  say("Asking the server what it serves…");
  try {
    state.info = await (await api("/v1/models")).json();
  } catch (err) {
    fail(err);
    return;
  }
  $("error").textContent = "";
  build(state.info);
  await Promise.all(state.pending);
  state.pending = [];
  document.body.dataset.state = "ready";
  say(`Ready: ${state.info.model}. Choose a photo or a sample.`);
  if (state.photo) translate();
}

function build(info) {
  $("model-name").textContent = `— ${info.model}`;
  const engines = info.engines.map((e) => `${e.name} ${e.precision} on ${e.device}`);
  $("model-line").textContent = `engines: ${engines.join(", ")}; trained at `
    + `${info.default_size.join("x")}`;
  buildSamples(info);
  const box = $("model-controls");
  box.replaceChildren();
  for (const name of info.images.slice(1)) box.append(imageControl(name));
  for (const [name, range] of Object.entries(info.knobs)) box.append(knobControl(name, range));
  if (info.mask) box.append(...maskControls(info));
  $("resolution").replaceChildren(...info.resolution.map((p) => element("option", { value: p }, p)));
  $("engine").replaceChildren(...info.engines.map((e) => element("option", { value: e.name },
    `${e.name} (${e.precision}, ${e.device})`)));
  $("engine-field").hidden = info.engines.length < 2;
}

function buildSamples(info) {
  const box = $("samples");
  box.replaceChildren();
  for (let i = 0; i < info.samples.count; i++) {
    const img = element("img", { alt: "" });
    const button = element("button", { type: "button", id: `sample-${i}`,
      "aria-label": `Sample ${i + 1} (${info.samples.task}, domain A)` }, img);
    box.append(button);
    api(`/v1/samples/${i}.png`).then((r) => r.blob()).then((blob) => {
      img.src = URL.createObjectURL(blob);
      button.addEventListener("click", () => usePhoto(blob, `sample-${i}.png`));
    }).catch(fail);
  }
}

// An image input beyond the first (an exemplar): a file field, a sample of domain B until then.
function imageControl(name) {
  const note = element("span", { id: `note-${name}` }, "using sample B1");
  state.pending.push(api(`/v1/samples/0.png?domain=B`).then((r) => r.blob())
    .then((blob) => { if (!state.extra[name]) state.extra[name] = blob; }).catch(fail));
  const input = element("input", { type: "file", id: `input-${name}`, accept: "image/*",
    onchange: (e) => {
      if (!e.target.files[0]) return;
      state.extra[name] = e.target.files[0];
      note.textContent = `using ${e.target.files[0].name}`;
      schedule(0);
    } });
  return field(`input-${name}`, `${name} (picture)`, input, note);
}

// A knob: a slider over its range that translates as it moves (debounced), with its value.
function knobControl(name, [low, high]) {
  const start = Math.min(Math.max(1, low), high);
  const step = (high - low) / 80;
  const shown = element("output", { for: `knob-${name}`, id: `value-${name}` }, String(start));
  const slider = element("input", { type: "range", id: `knob-${name}`, "data-knob": name,
    min: low, max: high, step, value: start,
    oninput: () => { shown.textContent = slider.value; schedule(150); },
    onchange: () => schedule(0) });
  return field(`knob-${name}`, name, slider, shown);
}

// A mask input: the model's own (where it has one), a scheme with a seed, or painted.
function maskControls(info) {
  const options = [];
  if (!info.mask.required) options.push(element("option", { value: "" }, "the model's own"));
  for (const scheme of info.mask_schemes) {
    options.push(element("option", { value: `scheme:${scheme}` }, `scheme: ${scheme}`));
  }
  options.push(element("option", { value: "painted" }, "painted on the picture (mouse)"));
  const mode = element("select", { id: "mask-mode", onchange: () => {
    $("paint").hidden = mode.value !== "painted";
    schedule(0);
  } }, ...options);
  const seed = element("input", { type: "number", id: "seed", min: 0, value: 0,
    onchange: () => schedule(0) });
  const clear = element("button", { type: "button", id: "paint-clear", onclick: () => {
    const canvas = $("paint");
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    schedule(0);
  } }, "Clear painting");
  return [field("mask-mode", `${info.mask.name}`, mode), field("seed", "Scheme seed", seed, clear)];
}

// -- the picture ---------------------------------------------------------------------------

function usePhoto(blob, name) {
  state.photo = blob;
  state.photoName = name;
  const img = element("img", { id: "img-input", alt: `the photo ${name}` });
  const canvas = element("canvas", { id: "paint", class: "paint",
    "aria-label": "paint the mask here with the mouse" });
  canvas.hidden = !$("mask-mode") || $("mask-mode").value !== "painted";
  img.addEventListener("load", () => {
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    zoomAll();
  });
  wirePainting(canvas);
  img.src = URL.createObjectURL(blob);
  const frame = element("div", { class: "frame" }, img, canvas);
  const figure = element("figure", { id: "panel-input" }, frame,
    element("figcaption", {}, `input: ${name}`));
  $("panels").replaceChildren(figure);
  $("facts").replaceChildren();
  translate();
}

function wirePainting(canvas) {
  let last = null;
  const at = (e) => {
    const box = canvas.getBoundingClientRect();
    return [(e.clientX - box.left) * canvas.width / box.width,
      (e.clientY - box.top) * canvas.height / box.height];
  };
  const stroke = (e) => {
    const g = canvas.getContext("2d");
    const [x, y] = at(e);
    g.strokeStyle = g.fillStyle = "#e0162b";
    g.lineCap = "round";
    g.lineWidth = Math.max(1, Math.round(Math.min(canvas.width, canvas.height) / 8));
    g.beginPath();
    g.moveTo(...(last || [x, y]));
    g.lineTo(x, y);
    g.stroke();
    last = [x, y];
  };
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    last = null;
    stroke(e);
  });
  canvas.addEventListener("pointermove", (e) => { if (last) stroke(e); });
  canvas.addEventListener("pointerup", () => { last = null; schedule(0); });
}

// The painted strokes as the grey mask file: white where painted, black elsewhere.
function paintedMask() {
  const canvas = $("paint");
  const out = element("canvas", { width: canvas.width, height: canvas.height });
  const g = out.getContext("2d");
  g.drawImage(canvas, 0, 0);
  g.globalCompositeOperation = "source-in";
  g.fillStyle = "#fff";
  g.fillRect(0, 0, out.width, out.height);
  g.globalCompositeOperation = "destination-over";
  g.fillStyle = "#000";
  g.fillRect(0, 0, out.width, out.height);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

// -- translating ---------------------------------------------------------------------------

async function translate() {
  if (!state.photo || !state.info || state.pending.length) return;   // load() translates then
  const ticket = ++state.ticket;
  document.body.dataset.ticket = ticket;
  const info = state.info;
  const form = new FormData();
  form.append(info.images[0], state.photo, state.photoName);
  for (const [name, blob] of Object.entries(state.extra)) form.append(name, blob, `${name}.png`);
  const query = new URLSearchParams();
  for (const slider of document.querySelectorAll("[data-knob]")) {
    query.set(slider.dataset.knob, slider.value);
  }
  const mode = $("mask-mode") ? $("mask-mode").value : "";
  if (mode.startsWith("scheme:")) {
    query.set("mask", mode.slice("scheme:".length));
    query.set("seed", $("seed").value || "0");
  } else if (mode === "painted") {
    form.append(info.mask.name, await paintedMask(), `${info.mask.name}.png`);
  }
  query.set("resolution", $("resolution").value);
  if (!$("engine-field").hidden) query.set("engine", $("engine").value);
  document.body.dataset.state = "busy";
  say("Translating…");
  try {
    const response = await api(`/v1/translate?${query}`, { method: "POST", body: form,
      headers: { Accept: "application/json" } });
    const answer = await response.json();
    if (ticket !== state.ticket) return;                // a newer request is on its way
    $("error").textContent = "";
    show(answer, query.toString());
    document.body.dataset.state = "done";
    say(`Translated ${answer.size.join("x")} on ${answer.engine} (${answer.precision}) in `
      + `${answer.timing_ms.total} ms.`);
  } catch (err) {
    if (ticket === state.ticket) fail(err);
  }
}

function blobOf(dataUrl) {
  const bytes = Uint8Array.from(atob(dataUrl.split(",")[1]), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: "image/png" });
}

function panel(name, caption, dataUrl) {
  const href = URL.createObjectURL(blobOf(dataUrl));
  state.urls.push(href);
  const img = element("img", { id: `img-${name}`, alt: caption });
  img.addEventListener("load", zoomAll);
  img.src = dataUrl;
  return element("figure", { id: `panel-${name}` }, element("div", { class: "frame" }, img),
    element("figcaption", {}, `${caption} `,
      element("a", { href, download: `${name}.png`, id: `download-${name}` }, "download")));
}

function show(answer, query) {
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
  const panels = [$("panel-input")];
  if (answer.mask) panels.push(panel("mask", `mask (${answer.mask_name})`, answer.mask));
  for (const [name, url] of Object.entries(answer.outputs)) {
    if (name !== answer.mask_name) panels.push(panel(name, name, url));
  }
  $("panels").replaceChildren(...panels);
  $("panels").dataset.query = query;
  $("panels").dataset.ticket = state.ticket;
  const batches = answer.batch.map((b) => `${b.rows} row${b.rows === 1 ? "" : "s"}`);
  const facts = [
    ["engine", `${answer.engine} (${answer.precision}, ${answer.device})`],
    ["batch", `${answer.batch.length} batch${answer.batch.length === 1 ? "" : "es"}: `
      + batches.join(", ")],
    ["queue", `${answer.timing_ms.queue} ms`], ["compute", `${answer.timing_ms.compute} ms`],
    ["total", `${answer.timing_ms.total} ms`], ["size", answer.size.join(" x ")],
  ];
  if (answer.notes.length) facts.push(["notes", answer.notes.join("; ")]);
  $("facts").replaceChildren(...facts.flatMap(([term, value]) => [
    element("dt", {}, term), element("dd", { id: `fact-${term}` }, value)]));
}

function zoomAll() {
  const zoom = Number($("zoom").value);
  for (const img of document.querySelectorAll("#panels img")) {
    if (img.naturalWidth) img.style.width = `${img.naturalWidth * zoom}px`;
  }
  const canvas = $("paint");
  if (canvas) canvas.style.width = `${canvas.width * zoom}px`;
}

// -- wiring --------------------------------------------------------------------------------

function wire() {
  $("file").addEventListener("change", (e) => {
    if (e.target.files[0]) usePhoto(e.target.files[0], e.target.files[0].name);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) usePhoto(file, file.name);
  });
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); translate(); });
  $("resolution").addEventListener("change", () => schedule(0));
  $("engine").addEventListener("change", () => schedule(0));
  $("zoom").addEventListener("change", zoomAll);
  $("key").value = sessionStorage.getItem(KEY) || "";
  $("key-use").addEventListener("click", () => {
    sessionStorage.setItem(KEY, $("key").value.trim());
    load();
  });
}

wire();
load();
