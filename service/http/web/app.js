// The fcnseg web page: pick a model, send an image to POST /v1/segment, show the mask.
// No build step and no third-party code: the page must work offline, served by the service.
//
// One inference per image: the page asks for the class-index PNG (the lossless answer, also
// what "Download index mask" saves), decodes it into a canvas and paints it in the model's
// palette itself, counting each class's share on the way. Models with more than 256 classes
// answer with a 16-bit PNG that a canvas cannot read exactly; for those the page asks the
// service for the colour PNG and the JSON summary instead.
//
// "Other format" offers every output format the model lists (GET v1/models: name, media type,
// file suffix): choosing one asks the service for the current image in that format and turns
// the link below it into a download of the answer.
//
// "Try a sample" sends the aerial photo shipped with the page (samples/) to the default model.
// The outline view draws only the borders between classes (found on the painted mask) over
// the image, which stays readable where a 50% overlay of a colourful photo is not.
//
// "Clearer colours" repaints the view and the legend in a palette the page chooses, for models
// whose dataset palette misleads (the default model's, from the Dubai aerial set, paints water
// orange). Only the picture changes: the class indices, both downloads and every answer of the
// service keep the model's palette.
"use strict";

const API_KEY_HEADER = "X-API-Key";
const MAX_CANVAS_CLASSES = 256;
const SAMPLE_URL = "samples/dubai-aerial.jpg";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"),
  modelInfo: $("model-info"),
  apiKey: $("api-key"),
  file: $("file"),
  dropZone: $("drop-zone"),
  status: $("status"),
  error: $("error"),
  result: $("result"),
  view: $("view"),
  image: $("image"),
  imageFigure: $("image-figure"),
  mask: $("mask"),
  outline: $("outline"),
  sample: $("sample"),
  opacity: $("opacity"),
  opacityValue: $("opacity-value"),
  downloadIndex: $("download-index"),
  downloadColor: $("download-color"),
  exportFormat: $("export-format"),
  exportInfo: $("export-info"),
  exportLink: $("export-link"),
  legendBody: document.querySelector("#legend tbody"),
  clearColours: $("clear-colours"),
  paletteNote: $("palette-note"),
  timing: $("timing"),
};

let models = [];
let currentFile = null;
let requestSerial = 0; // answers to superseded requests are dropped
let exportSerial = 0;
const objectUrls = { image: null, index: null, color: null, export: null };
// The result on show, repainted when the palette option changes: the model, its class shares
// and the decoded index mask (null when the service painted the mask: > 256 classes).
let shown = null;

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function headers() {
  const key = ui.apiKey.value.trim();
  return key ? { [API_KEY_HEADER]: key } : {};
}

// The API's own words for a failed request: {"error": {"code", "message"}}.
async function apiError(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      code = body.error.code || code;
      message = body.error.message;
    }
  } catch (_) {
    // not JSON (a proxy's page, for one): keep the status line
  }
  return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
}

async function request(url, options = {}) {
  let response;
  try {
    response = await fetch(url, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  } catch (err) {
    throw new ApiError(0, "network", `Could not reach the service (${err.message}).`, null);
  }
  if (!response.ok) throw await apiError(response);
  return response;
}

function describeError(err) {
  if (!(err instanceof ApiError)) return `Something went wrong in the page: ${err.message}`;
  let text = err.message;
  if (err.retryAfter) text += ` Try again in ${err.retryAfter} s.`;
  if (err.status === 401) text += " Enter the service's API key above.";
  return text;
}

// ---- models ---------------------------------------------------------------------------------

function selectedModel() {
  return models.find((m) => m.name === ui.model.value) || null;
}

function describeModel() {
  const model = selectedModel();
  ui.modelInfo.textContent = model
    ? `${model.arch}, ${model.classes.length} classes, ${model.in_channels} input channel(s)`
    : "";
  const previous = ui.exportFormat.value;
  const formats = (model && model.formats) || [];
  ui.exportFormat.replaceChildren(
    new Option("Choose a format…", ""),
    ...formats.map((f) => new Option(`${f.name} (${f.suffix})`, f.name)),
  );
  if (formats.some((f) => f.name === previous)) ui.exportFormat.value = previous;
}

function selectedFormat() {
  const model = selectedModel();
  return ((model && model.formats) || []).find((f) => f.name === ui.exportFormat.value) || null;
}

async function loadModels() {
  setStatus("Loading the model list…");
  try {
    const response = await request("v1/models");
    models = (await response.json()).models;
  } catch (err) {
    models = [];
    ui.model.replaceChildren(new Option("No models available", ""));
    showError(describeError(err));
    setStatus("");
    return;
  }
  const previous = ui.model.value;
  ui.model.replaceChildren(
    ...models.map((m) => new Option(m.default && m.name !== "default" ? `${m.name} (default)` : m.name, m.name)),
  );
  const keep = models.find((m) => m.name === previous) || models.find((m) => m.default) || models[0];
  if (keep) ui.model.value = keep.name;
  describeModel();
  showError("");
  setStatus(models.length ? "Choose or drop an image." : "The service has no models loaded.");
}

// ---- segmentation ---------------------------------------------------------------------------

function segmentUrl(format, model) {
  const params = new URLSearchParams({ format, model: model.name });
  return `v1/segment?${params}`;
}

function postImage(file, format, model) {
  const body = new FormData();
  body.append("image", file, file.name);
  return request(segmentUrl(format, model), { method: "POST", body });
}

async function decodePng(blob) {
  // No colour conversion: the pixel values are class indices, not colours.
  const bitmap = await createImageBitmap(blob, {
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return context.getImageData(0, 0, canvas.width, canvas.height);
}

// Paint the index mask in the palette into the visible canvas; return pixels per class.
function paintIndexMask(indexData, palette) {
  const { width, height, data } = indexData;
  ui.mask.width = width;
  ui.mask.height = height;
  const context = ui.mask.getContext("2d");
  const out = context.createImageData(width, height);
  const counts = new Array(palette.length).fill(0);
  for (let i = 0, p = 0; p < data.length; i += 1, p += 4) {
    const index = data[p]; // grey PNG: R = G = B = class index
    const colour = palette[index] || [0, 0, 0];
    if (index < counts.length) counts[index] += 1;
    out.data[p] = colour[0];
    out.data[p + 1] = colour[1];
    out.data[p + 2] = colour[2];
    out.data[p + 3] = 255;
  }
  context.putImageData(out, 0, 0);
  return counts.map((pixels) => pixels / (width * height));
}

async function segmentWithIndex(file, model) {
  const response = await postImage(file, "index", model);
  const indexBlob = await response.blob();
  const indexData = await decodePng(indexBlob);
  const fractions = paintIndexMask(indexData, model.palette);
  // in the model's palette whatever the page shows: the same picture as the API's colour format
  const colorBlob = await new Promise((resolve) => ui.mask.toBlob(resolve, "image/png"));
  return { response, indexBlob, colorBlob, fractions, indexData };
}

async function segmentWithServerColours(file, model) {
  const [indexResponse, colorResponse, jsonResponse] = await Promise.all(
    ["index", "color", "json"].map((format) => postImage(file, format, model)),
  );
  const colorBlob = await colorResponse.blob();
  const bitmap = await createImageBitmap(colorBlob);
  ui.mask.width = bitmap.width;
  ui.mask.height = bitmap.height;
  ui.mask.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  const summary = await jsonResponse.json();
  return {
    response: indexResponse,
    indexBlob: await indexResponse.blob(),
    colorBlob,
    fractions: summary.classes.map((c) => c.fraction),
    indexData: null,
  };
}

// Borders between classes: pixels of the painted mask with a 4-neighbour of another colour,
// in their own class colour; everything else transparent (both sides of a border: 2 px).
function paintOutline() {
  const { width, height } = ui.mask;
  const src = ui.mask.getContext("2d").getImageData(0, 0, width, height).data;
  ui.outline.width = width;
  ui.outline.height = height;
  const context = ui.outline.getContext("2d");
  const out = context.createImageData(width, height);
  const differs = (a, b) => src[a] !== src[b] || src[a + 1] !== src[b + 1] || src[a + 2] !== src[b + 2];
  const row = width * 4;
  for (let y = 0, p = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1, p += 4) {
      const edge = (x > 0 && differs(p, p - 4)) || (x < width - 1 && differs(p, p + 4))
        || (y > 0 && differs(p, p - row)) || (y < height - 1 && differs(p, p + row));
      if (!edge) continue;
      out.data[p] = src[p];
      out.data[p + 1] = src[p + 1];
      out.data[p + 2] = src[p + 2];
      out.data[p + 3] = 255;
    }
  }
  context.putImageData(out, 0, 0);
}

function setDownload(link, key, blob, filename) {
  if (objectUrls[key]) URL.revokeObjectURL(objectUrls[key]);
  objectUrls[key] = URL.createObjectURL(blob);
  link.href = objectUrls[key];
  link.download = filename;
}

function renderLegend(model, fractions, palette) {
  const rows = model.classes.map((name, index) => {
    const [r, g, b] = palette[index] || [0, 0, 0];
    const fraction = fractions[index] || 0;
    const row = document.createElement("tr");
    row.dataset.index = String(index);
    row.dataset.fraction = String(fraction);
    const swatchCell = document.createElement("td");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = `rgb(${r}, ${g}, ${b})`;
    swatch.setAttribute("aria-hidden", "true");
    const colourText = document.createElement("span");
    colourText.className = "colour-code";
    colourText.textContent = `rgb(${r}, ${g}, ${b})`;
    swatchCell.append(swatch, colourText);
    const nameCell = document.createElement("td");
    nameCell.className = "class-name";
    nameCell.textContent = name;
    const shareCell = document.createElement("td");
    shareCell.className = "share";
    shareCell.textContent = `${(fraction * 100).toFixed(1)}%`;
    row.append(swatchCell, nameCell, shareCell);
    return row;
  });
  ui.legendBody.replaceChildren(...rows);
}

// Fetch the current image in the chosen format and point the export link at the answer.
async function prepareExport() {
  const file = currentFile;
  const model = selectedModel();
  const format = selectedFormat();
  const serial = ++exportSerial;
  if (objectUrls.export) URL.revokeObjectURL(objectUrls.export);
  objectUrls.export = null;
  ui.exportLink.href = "#";
  ui.exportLink.dataset.state = "idle";
  ui.exportLink.setAttribute("aria-disabled", "true");
  ui.exportInfo.textContent = "";
  if (!file || !model || !format) return;
  ui.exportLink.dataset.state = "busy";
  ui.exportInfo.textContent = `Preparing ${format.name}: ${format.description}…`;
  try {
    const response = await postImage(file, format.name, model);
    const blob = await response.blob();
    if (serial !== exportSerial) return;
    setDownload(ui.exportLink, "export", blob, `${stem(file.name)}${format.suffix}`);
    ui.exportLink.textContent = `Download ${format.name}`;
    ui.exportLink.dataset.format = format.name;
    ui.exportLink.dataset.state = "ready";
    ui.exportLink.removeAttribute("aria-disabled");
    ui.exportInfo.textContent = `${format.description} (${format.media_type}).`;
  } catch (err) {
    if (serial !== exportSerial) return;
    ui.exportLink.dataset.state = "error";
    ui.exportInfo.textContent = describeError(err);
  }
}

function stem(name) {
  const dot = name.lastIndexOf(".");
  return (dot > 0 ? name.slice(0, dot) : name) || "image";
}

async function segment() {
  const file = currentFile;
  const model = selectedModel();
  if (!file) return;
  if (!model) {
    showError("No model is selected: the model list could not be loaded.");
    return;
  }
  const serial = ++requestSerial;
  showError("");
  ui.result.dataset.state = "busy";
  setStatus(`Segmenting ${file.name} with ${model.name}…`);
  try {
    const result = model.classes.length <= MAX_CANVAS_CLASSES
      ? await segmentWithIndex(file, model)
      : await segmentWithServerColours(file, model);
    if (serial !== requestSerial) return;
    const base = stem(file.name);
    setDownload(ui.downloadIndex, "index", result.indexBlob, `${base}_mask.png`);
    setDownload(ui.downloadColor, "color", result.colorBlob, `${base}_color.png`);
    shown = { model, fractions: result.fractions, indexData: result.indexData };
    applyPalette();
    const ms = result.response.headers.get("X-Inference-Ms");
    const served = result.response.headers.get("X-Model") || model.name;
    ui.timing.textContent = ms ? `Model ${served}, inference ${Number(ms).toFixed(1)} ms.` : "";
    ui.result.hidden = false;
    ui.result.dataset.state = "ready";
    prepareExport();
    setStatus(`Done: ${file.name} segmented with ${served} (${ui.mask.width}×${ui.mask.height}).`);
  } catch (err) {
    if (serial !== requestSerial) return;
    ui.result.dataset.state = "error";
    setStatus("");
    showError(describeError(err));
  }
}

// Browsers do not render TIFF: the service decodes it (bands, 16-bit) into a PNG to show.
function isTiff(file) {
  return /^image\/tiff?$/i.test(file.type) || /\.tiff?$/i.test(file.name);
}

async function previewBlob(file) {
  if (!isTiff(file)) return file;
  const model = selectedModel();
  const body = new FormData();
  body.append("image", file, file.name);
  const params = model ? `?${new URLSearchParams({ model: model.name })}` : "";
  const response = await request(`v1/preview${params}`, { method: "POST", body });
  return response.blob();
}

async function showInput(file) {
  let blob;
  try {
    blob = await previewBlob(file);
  } catch (err) {
    if (file === currentFile) showError(describeError(err));
    return;
  }
  if (file !== currentFile) return;
  if (objectUrls.image) URL.revokeObjectURL(objectUrls.image);
  objectUrls.image = URL.createObjectURL(blob);
  ui.image.dataset.preview = blob === file ? "original" : "server";
  ui.image.src = objectUrls.image;
}

function useFile(file) {
  if (!file) return;
  currentFile = file;
  ui.imageFigure.hidden = false;
  ui.image.alt = `The uploaded image, ${file.name}`;
  showInput(file);
  segment();
}

// ---- colours --------------------------------------------------------------------------------

// Colours people expect for common class names (first match wins, each colour used once).
const EXPECTED_COLOURS = [
  [/water|sea|river|lake|ocean/i, [31, 119, 180]],
  [/vegetation|tree|grass|forest|plant|crop/i, [44, 160, 44]],
  [/road|street|highway/i, [127, 127, 127]],
  [/building|house|roof/i, [214, 39, 40]],
  [/land|soil|ground|sand|desert/i, [222, 184, 135]],
  [/sky|cloud/i, [174, 199, 232]],
  [/unlabel|background|void/i, [40, 40, 40]],
];
// For the other classes, in turn: colours far apart from each other and from the ones above.
const DISTINCT_COLOURS = [
  [230, 159, 0], [86, 180, 233], [204, 121, 167], [240, 228, 66], [0, 158, 115],
  [148, 103, 189], [213, 94, 0], [140, 86, 75], [188, 189, 34], [23, 190, 207],
];

// Past the list: hues a golden angle apart, so neighbouring classes never look alike.
function goldenColour(index) {
  const hue = (index * 137.508) % 360;
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    return Math.round(255 * (0.5 - 0.35 * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

function clearPalette(classes) {
  const used = new Set();
  const key = (colour) => colour.join(",");
  const named = classes.map((name) => {
    const hit = EXPECTED_COLOURS.find(([pattern, colour]) => pattern.test(name) && !used.has(key(colour)));
    if (!hit) return null;
    used.add(key(hit[1]));
    return hit[1];
  });
  let next = 0;
  return named.map((colour, index) => {
    if (colour) return colour;
    while (next < DISTINCT_COLOURS.length && used.has(key(DISTINCT_COLOURS[next]))) next += 1;
    const pick = next < DISTINCT_COLOURS.length ? DISTINCT_COLOURS[next] : goldenColour(index);
    next += 1;
    used.add(key(pick));
    return pick;
  });
}

// Paint the result on show (mask, borders, legend) in the palette the option asks for.
function applyPalette() {
  if (!shown) return;
  const { model, fractions, indexData } = shown;
  const clear = ui.clearColours.checked && indexData !== null;
  const palette = clear ? clearPalette(model.classes) : model.palette;
  if (indexData) paintIndexMask(indexData, palette);
  paintOutline();
  renderLegend(model, fractions, palette);
  ui.clearColours.disabled = indexData === null;
  ui.result.dataset.palette = clear ? "clear" : "model";
  if (indexData === null) {
    ui.paletteNote.textContent = "Colours: the model's own palette (the service paints masks of "
      + "more than 256 classes, so the page cannot repaint them).";
  } else if (clear) {
    ui.paletteNote.textContent = "Colours: a clearer palette chosen by this page. The class "
      + "indices, both downloads and the service's answers keep the model's palette.";
  } else {
    ui.paletteNote.textContent = "Colours: the model's own palette, from its training data. Some "
      + "datasets use unexpected colours (in the Dubai aerial set water is orange): tick "
      + "\u201cClearer colours\u201d to repaint the view.";
  }
}

// ---- view controls --------------------------------------------------------------------------

function setView(mode) {
  for (const name of ["side", "overlay", "outline"]) ui.view.classList.toggle(name, mode === name);
}

// The sample is an aerial photo: segment it with the default model (the aerial one).
async function trySample() {
  showError("");
  setStatus("Loading the sample image…");
  let blob;
  try {
    blob = await (await request(SAMPLE_URL)).blob();
  } catch (err) {
    setStatus("");
    showError(describeError(err));
    return;
  }
  const preferred = models.find((m) => m.default) || models[0];
  if (preferred) ui.model.value = preferred.name;
  describeModel();
  useFile(new File([blob], "dubai-aerial.jpg", { type: blob.type || "image/jpeg" }));
}

function setOpacity() {
  const value = Number(ui.opacity.value);
  ui.view.style.setProperty("--mask-opacity", String(value / 100));
  ui.opacityValue.textContent = `${value}%`;
}

ui.image.addEventListener("error", () => {
  // The service reads formats a browser may not show (TIFF, 16-bit): show the mask alone.
  if (!currentFile) return;
  ui.imageFigure.hidden = true;
});

document.querySelectorAll('input[name="view"]').forEach((radio) => {
  radio.addEventListener("change", () => setView(radio.value));
});
ui.opacity.addEventListener("input", setOpacity);
ui.clearColours.addEventListener("change", applyPalette);
ui.exportFormat.addEventListener("change", prepareExport);
ui.model.addEventListener("change", () => {
  describeModel();
  segment();
});
ui.apiKey.addEventListener("change", loadModels);
ui.file.addEventListener("change", () => useFile(ui.file.files[0]));
ui.sample.addEventListener("click", trySample);

// Drag and drop: anywhere on the drop zone; elsewhere the browser must not open the file.
for (const type of ["dragenter", "dragover"]) {
  ui.dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    ui.dropZone.classList.add("dragging");
  });
}
for (const type of ["dragleave", "drop"]) {
  ui.dropZone.addEventListener(type, () => ui.dropZone.classList.remove("dragging"));
}
ui.dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  useFile(event.dataTransfer.files[0]);
});
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

setView("side");
setOpacity();
loadModels();
