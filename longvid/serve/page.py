"""The single page at ``/``: the live streams with their latest labels or answers, a form
to add a stream and a box to ask a question (plain HTML and JavaScript, no build step).
It talks to the same JSON API; with a token it asks for it once (kept in the tab's
sessionStorage) and sends it as a bearer token."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>longvid serve</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top}
th{background:#f4f4f4}code{font-size:12px}.err{color:#b00}.muted{color:#777}input[type=text]{width:28em}
</style></head><body>
<h1>longvid serve</h1>
<p class="muted" id="health">connecting...</p>
<form id="add"><input type="text" id="source" placeholder="udp://127.0.0.1:5000 or rtsp://camera/stream">
<span id="lmm" hidden><input type="text" id="questions" placeholder="questions to answer, separated by ;" style="width:18em">
every <input type="number" id="every" min="0.1" step="any" value="10" style="width:4em"> s</span>
<button>add stream</button> <span id="add-error" class="err"></span></form>
<table><thead><tr><th>stream</th><th>source</th><th>status</th><th>clips</th><th>dropped</th><th>latency</th><th>latest</th><th id="ask-head" hidden>ask</th><th></th></tr></thead>
<tbody id="streams"></tbody></table>
<script>
"use strict";
let token = sessionStorage.getItem("longvid-token") || "";
const answers = {};  // stream id -> the last answer asked from this page
let asks = false;  // the model answers questions (an LMM): the page shows the question boxes
function headers(){ const h = {"Content-Type": "application/json"}; if (token) h["Authorization"] = "Bearer " + token; return h; }
async function api(method, path, body){
  const r = await fetch(path, {method, headers: headers(), body: body ? JSON.stringify(body) : undefined});
  if (r.status === 401){ token = prompt("bearer token") || ""; sessionStorage.setItem("longvid-token", token); }
  const data = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function text(value){ const span = document.createElement("span"); span.textContent = value; return span; }
function latest(record){
  if (!record) return "";
  if (record.answer !== undefined) return record.question + " \\u2192 " + record.answer;
  if (Array.isArray(record.top)) return record.top.slice(0, 3).map(t => t.label + " (" + t.score.toFixed(2) + ")").join(", ");
  return JSON.stringify(record.top);
}
const rows = {};  // stream id -> its table row, kept across refreshes (so a box being typed in or a button being clicked stays)
function askCell(id){  // a question box; the reply (answer or error) shows under it
  const cell = document.createElement("td");
  const input = document.createElement("input"); input.type = "text"; input.placeholder = "question"; input.style.width = "12em";
  const answer = document.createElement("div"); answer.className = "answer";
  input.addEventListener("keydown", async e => {
    if (e.key !== "Enter") return;
    try { const a = await api("POST", `/v1/streams/${id}/ask`, {question: input.value}); answers[id] = a.question + " \u2192 " + a.answer; }
    catch (err){ answers[id] = err.message; }
    input.value = ""; refresh();
  });
  cell.append(input, answer);
  return cell;
}
function rowFor(s){  // the stream's row, made on first sight: 7 text cells, the question box (LMMs), the stop cell
  if (rows[s.id]) return rows[s.id];
  const row = document.createElement("tr");
  for (let i = 0; i < 7; i++) row.append(document.createElement("td"));
  if (asks) row.append(askCell(s.id));
  const stopCell = document.createElement("td"); stopCell.className = "stop"; row.append(stopCell);
  return rows[s.id] = row;
}
function fill(row, s){
  const values = [s.id, s.source, s.status, s.clips, s.dropped, s.latency === null ? "" : s.latency.toFixed(2) + " s", latest(s.last)];
  values.forEach((value, i) => { if (row.children[i].textContent !== String(value)) row.children[i].textContent = String(value); });
  const answer = row.querySelector(".answer");
  if (answer) answer.textContent = answers[s.id] || "";
  const stopCell = row.querySelector(".stop");
  const live = s.status === "live" || s.status === "reconnecting";  // an ended stream stays listed, with nothing to stop
  if (live && !stopCell.querySelector("button")){
    const stop = document.createElement("button"); stop.textContent = "stop";
    stop.onclick = () => api("DELETE", `/v1/streams/${s.id}`).then(refresh, err => { stopCell.replaceChildren(text(err.message)); });
    stopCell.replaceChildren(stop);
  } else if (!live && stopCell.querySelector("button")) stopCell.replaceChildren();
}
async function refresh(){
  try {
    const health = await api("GET", "/healthz");
    asks = Boolean(health.answers);
    document.getElementById("health").textContent = `model ${health.model}, ${health.streams}/${health.capacity} streams` + (asks ? ", answers questions" : ", labels clips");
    document.getElementById("lmm").hidden = document.getElementById("ask-head").hidden = !asks;
    const data = await api("GET", "/v1/streams");
    const body = document.getElementById("streams");
    const listed = new Set(data.streams.map(s => s.id));
    for (const id of Object.keys(rows)) if (!listed.has(id)){ rows[id].remove(); delete rows[id]; }
    data.streams.forEach((s, i) => {
      const row = rowFor(s);
      fill(row, s);
      if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
    });
  } catch (err){ document.getElementById("health").textContent = err.message; }
}
document.getElementById("add").addEventListener("submit", async e => {
  e.preventDefault();
  const questions = document.getElementById("questions").value.split(";").map(q => q.trim()).filter(Boolean);
  const every = Number(document.getElementById("every").value);
  const stream = {source: document.getElementById("source").value};
  if (questions.length) Object.assign(stream, {ask: questions}, every > 0 ? {every} : {});
  try { await api("POST", "/v1/streams", stream);
        document.getElementById("add-error").textContent = "";
        document.getElementById("source").value = document.getElementById("questions").value = ""; refresh(); }
  catch (err){ document.getElementById("add-error").textContent = err.message; }
});
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
