// Steward console: the live parts, on top of pages that work without JavaScript.
//
// - A run's log (`pre[data-stream]`): Server-Sent Events from the last event id the
//   page holds, like `tail -f`. Only the last `data-window` lines stay in the page,
//   however long the log. While the tab is hidden the stream is closed; when it is
//   shown again it resumes from the last id, so nothing is missed or shown twice.
// - An incident's timeline (`[data-live]`): the server sends the timeline again when
//   it grows; paused while hidden the same way.
"use strict";

function follow(el, url, onEvent, onEnd) {
  let source = null;
  let done = false;
  function open() {
    if (source || done) return;
    source = new EventSource(url());
    onEvent(source);
    source.addEventListener("end", () => { done = true; close(); if (onEnd) onEnd(); });
  }
  function close() { if (source) { source.close(); source = null; } }
  document.addEventListener("visibilitychange", () => { document.hidden ? close() : open(); });
  if (!document.hidden) open();
}

function runLog(pre) {
  const windowLines = parseInt(pre.dataset.window || "2000", 10);
  let last = 0;
  const state = document.getElementById("log-state");
  follow(pre, () => pre.dataset.stream + "?after=" + last, (source) => {
    source.addEventListener("run_event", (msg) => {
      const ev = JSON.parse(msg.data);
      if (ev.id <= last) return;
      last = ev.id;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      const line = document.createElement("span");
      line.className = "ev " + ev.kind;
      line.dataset.id = ev.id;
      const when = ev.at.substring(11, 19);
      line.textContent = when + " " + (ev.step ? "[" + ev.step + "] " : "") + ev.message + "\n";
      pre.appendChild(line);
      while (pre.childElementCount > windowLines) pre.removeChild(pre.firstElementChild);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    });
  }, () => { if (state) state.textContent = "The run has ended; this is its whole log (the last 2,000 lines)."; });
}

function liveTimeline(box) {
  follow(box, () => box.dataset.live, (source) => {
    source.addEventListener("timeline", (msg) => { box.innerHTML = msg.data; });
  });
}

document.querySelectorAll("pre[data-stream]").forEach(runLog);
document.querySelectorAll("[data-live]").forEach(liveTimeline);
