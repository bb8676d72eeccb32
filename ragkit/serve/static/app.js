// ragkit's page: ask a question, stream the answer (OpenAI chat.completion.chunk events), list
// the cited chunks, and show a cited chunk highlighted in its document. No build step, no CDN.
"use strict";
const $ = (id) => document.getElementById(id);
let model = null;
let controller = null;

$("key").value = localStorage.getItem("ragkit-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("ragkit-key", $("key").value); loadModel(); });

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}

async function errorOf(resp) {
  try { return (await resp.json()).error.message; } catch (e) { return resp.status + " " + resp.statusText; }
}

async function loadModel() {
  const resp = await fetch("/v1/models", { headers: headers() });
  if (!resp.ok) { $("error").textContent = await errorOf(resp); return; }
  model = (await resp.json()).data[0].id;
  $("model").textContent = model;
  $("error").textContent = "";
}

function showSources(sources) {
  const list = $("sources");
  list.textContent = "";
  for (const s of sources) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.className = "citation";
    a.textContent = `${s.source}:${s.start}-${s.end}`;
    a.title = "show the passage";
    a.addEventListener("click", () => showPassage(s));
    const score = document.createElement("span");
    score.className = "muted";
    score.textContent = `  score ${s.score.toFixed(3)}`;
    const snippet = document.createElement("div");
    snippet.className = "snippet";
    snippet.textContent = s.text.length > 160 ? s.text.slice(0, 160) + "…" : s.text;
    li.append(a, score, snippet);
    list.append(li);
  }
}

async function showPassage(s) {
  const resp = await fetch("/v1/documents/" + encodeURIComponent(s.doc_id), { headers: headers() });
  if (!resp.ok) { $("error").textContent = await errorOf(resp); return; }
  const doc = await resp.json();
  const box = $("passage");
  box.textContent = "";
  const mark = document.createElement("mark");
  mark.textContent = doc.text.slice(s.start, s.end);
  box.append(doc.text.slice(0, s.start), mark, doc.text.slice(s.end));
  $("passage-title").textContent = `${doc.source} [${s.start}:${s.end}]`;
  $("passage-box").hidden = false;
  box.scrollTop = mark.offsetTop - box.offsetTop - 40;  // the chunk at the top of the box
  $("passage-box").scrollIntoView({ block: "nearest" });
}

function showTimings(t) {
  const keys = ["retrieve_s", "queue_s", "ttft_s", "tokens_per_s", "prefill_tokens_computed", "prefill_tokens_reused"];
  $("timings").textContent = keys.filter((k) => k in t)
    .map((k) => `${k}=${Number.isInteger(t[k]) ? t[k] : t[k].toFixed(3)}`).join("  ");
}

async function ask(event) {
  event.preventDefault();
  if (!model) await loadModel();
  $("answer").textContent = ""; $("timings").textContent = ""; $("error").textContent = "";
  $("sources").textContent = ""; $("passage-box").hidden = true;
  const body = { model, stream: true, messages: [{ role: "user", content: $("question").value }] };
  if ($("k").value) body.k = Number($("k").value);
  if ($("kv_reuse").value) body.kv_reuse = $("kv_reuse").value;
  if ($("max_tokens").value) body.max_tokens = Number($("max_tokens").value);
  controller = new AbortController();
  $("send").disabled = true; $("stop").disabled = false;
  try {
    const resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!resp.ok) { $("error").textContent = await errorOf(resp); return; }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let shown = false;  // the sources come first (and again at the end)
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const event = JSON.parse(data);
        if (event.error) { $("error").textContent = event.error.message; continue; }
        if (event.ragkit && event.ragkit.sources && !shown) { showSources(event.ragkit.sources); shown = true; }
        if (event.ragkit && event.ragkit.timings) showTimings(event.ragkit.timings);
        const delta = event.choices[0].delta;
        if (delta.content) $("answer").textContent += delta.content;
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") $("error").textContent = String(e);
  } finally {
    $("send").disabled = false; $("stop").disabled = true; controller = null;
  }
}

$("ask").addEventListener("submit", ask);
$("stop").addEventListener("click", () => controller && controller.abort());
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
});
loadModel();
