// The web page: one POST to /v1/translate, then text, alternatives and an attention heatmap on a canvas.
"use strict";

const $ = (id) => document.getElementById(id);

async function translate(event) {
  event.preventDefault();
  const [source, target] = directionChoice();
  const beam = Number($("beam").value);
  const body = { text: $("text").value, source, beam, n_best: Math.min(3, beam), alignment: true };
  if (target) body.target = target;
  const context = $("context").value.trim();
  if (context) body.context = context;

  $("translate").disabled = true;
  try {
    const response = await fetch("/v1/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
    showResult(data);
  } catch (error) {
    showError(error.message);
  } finally {
    $("translate").disabled = false;
  }
}

function directionChoice() {
  const value = document.querySelector("input[name=direction]:checked").value;
  return value === "auto" ? ["auto", null] : value.split("-");
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("result").hidden = true;
}

function showResult(data) {
  const result = data.translations[0];
  $("error").hidden = true;
  $("translation").textContent = result.translation;
  $("translation").lang = result.target;
  $("direction-used").textContent = `${result.source} → ${result.target}`;
  $("score").textContent = result.score.toFixed(3);
  $("timing").textContent = `${data.time_ms.toFixed(0)} ms`;
  $("model").textContent = data.model;
  const list = $("alternatives");
  list.replaceChildren();
  for (const alternative of result.alternatives) {
    const item = document.createElement("li");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = alternative.score.toFixed(3);
    item.append(alternative.text, score);
    list.append(item);
  }
  if (!result.alternatives.length) list.append(Object.assign(document.createElement("li"), { textContent: "none" }));
  $("result").hidden = false;
  drawHeatmap($("heatmap"), result.alignment);
}

// Rows are output (target) pieces, columns input (source) pieces; darker cells = more attention.
function drawHeatmap(canvas, alignment) {
  const { source_tokens: columns, target_tokens: rows, weights } = alignment;
  const context = canvas.getContext("2d");
  const font = "13px system-ui, 'Noto Sans KR', NanumGothic, sans-serif";
  context.font = font;
  const rowLabelWidth = Math.max(...rows.map((t) => context.measureText(t).width), 20) + 12;
  const columnLabel = Math.max(...columns.map((t) => context.measureText(t).width), 20) * Math.SQRT1_2;  // at 45°
  const columnLabelHeight = columnLabel + 16;
  // Columns shrink to fit the page (down to 14 px, then it scrolls); rows keep room for Hangul.
  const available = canvas.parentElement.clientWidth - rowLabelWidth - columnLabel - 8;
  const cellWidth = Math.max(14, Math.min(30, Math.floor(available / columns.length)));
  const cellHeight = 24;
  const width = rowLabelWidth + columns.length * cellWidth + columnLabel + 8;
  const height = columnLabelHeight + rows.length * cellHeight + 4;
  // Shades are relative to the strongest weight, so diffuse attention is still readable.
  const peak = Math.max(...weights.flat(), 1e-6);
  $("attention-peak").textContent = peak.toFixed(2);

  const scale = window.devicePixelRatio || 1;
  canvas.width = width * scale;
  canvas.height = height * scale;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  canvas.dataset.rows = rows.length;
  canvas.dataset.columns = columns.length;
  context.scale(scale, scale);
  context.font = font;
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, height);
  weights.forEach((row, r) => {
    row.forEach((weight, c) => {
      const strength = Math.min(1, Math.max(0, weight / peak));
      context.fillStyle = `rgb(${255 - 215 * strength}, ${255 - 175 * strength}, ${255 - 45 * strength})`;
      context.fillRect(rowLabelWidth + c * cellWidth, columnLabelHeight + r * cellHeight, cellWidth - 1, cellHeight - 1);
    });
  });
  context.fillStyle = "#1d2330";
  context.textBaseline = "middle";
  context.textAlign = "right";
  rows.forEach((token, r) => context.fillText(token, rowLabelWidth - 6, columnLabelHeight + r * cellHeight + cellHeight / 2));
  context.textAlign = "left";
  columns.forEach((token, c) => {
    context.save();
    context.translate(rowLabelWidth + c * cellWidth + cellWidth / 2, columnLabelHeight - 6);
    context.rotate(-Math.PI / 4);
    context.fillText(token, 0, 0);
    context.restore();
  });
}

async function showModel() {
  try {
    const data = await (await fetch("/v1/languages")).json();
    $("model").textContent = data.model;
  } catch (error) {
    $("model").textContent = "unavailable";
  }
}

$("form").addEventListener("submit", translate);
$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("form").requestSubmit();
});
showModel();
