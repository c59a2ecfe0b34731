// The utterance browser of apa.report: reads the JSON embedded once in the page, filters and sorts in memory, and
// renders one page of rows at a time (a page holds at most `pageSize` utterances, whatever the data's size).
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var root = document.getElementById("browser");
  if (!root) return;
  var ASPECTS = DATA.aspects, EPS = DATA.eps, UTTS = DATA.utts;
  var OUTCOMES = {
    a: ["TA", "true accept: said right, accepted"],
    r: ["FR", "false reject: said right, rejected"],
    f: ["FA", "false accept: mispronounced, accepted"],
    c: ["TR", "true reject, correct diagnosis: mispronounced, rejected, the phone said was recognised"],
    d: ["TR", "true reject, diagnosis error: mispronounced, rejected, another phone recognised"]
  };

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(v, digits) {
    return v === null || v === undefined || (typeof v === "number" && !isFinite(v)) ? "n/a" : v.toFixed(digits);
  }
  function el(tag, attrs, html) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (html !== undefined) e.innerHTML = html;
    return e;
  }
  function option(value, label) { return '<option value="' + esc(value) + '">' + esc(label) + "</option>"; }

  if (!DATA.views.length) {
    root.appendChild(el("p", { "class": "empty" }, "No evaluated checkpoint (no eval/&lt;checkpoint&gt;/predictions.jsonl)."));
    return;
  }

  // ---- controls
  var speakers = Array.from(new Set(UTTS.map(function (u) { return u.speaker; }).filter(Boolean))).sort();
  var controls = el("div", { "class": "controls" });
  controls.innerHTML =
    '<label>run / checkpoint <select id="f-view">' + DATA.views.map(function (v) {
      return option(v.key, v.run + " / " + v.checkpoint);
    }).join("") + "</select></label>" +
    '<label>task <select id="f-task">' + option("both", "APA and MDD") + option("apa", "APA") + option("mdd", "MDD") +
    "</select></label>" +
    '<label>aspect <select id="f-aspect">' + ASPECTS.map(function (a) { return option(a, a); }).join("") +
    "</select></label>" +
    '<label title="APA: keep utterances whose predicted score for the aspect is at least this far from the human one">' +
    '|error| ≥ <input id="f-min-error" type="number" min="0" max="10" step="1" value="0"></label>' +
    '<label><input id="f-unparsed" type="checkbox"> parse failures only</label>' +
    '<label>speaker <select id="f-speaker">' + option("", "all") +
    speakers.map(function (s) { return option(s, s); }).join("") + "</select></label>" +
    '<label>search <input id="f-search" type="search" placeholder="id or words"></label>' +
    '<label>sort <select id="f-sort">' + option("id", "id") + option("apa-error", "largest |error| (aspect)") +
    option("per", "largest PER") + option("detection", "most detection errors (FR+FA+DE)") +
    option("mispronounced", "most annotated mispronunciations") + option("speaker", "speaker") + "</select></label>" +
    '<label>per page <select id="f-page-size">' + option("25", "25") + option("50", "50") + option("100", "100") +
    "</select></label>";
  root.appendChild(controls);
  var legend = el("div", { "class": "legend" }, Object.keys(OUTCOMES).map(function (k) {
    return '<span><span class="sw o-' + k + '"></span>' + esc(OUTCOMES[k][1]) + "</span>";
  }).join("") + '<span><u><b>X</b></u> annotated mispronunciation</span>' +
    '<span>score colours: |model − human| = 0 <span class="sw e0"></span>1 <span class="sw e1"></span>' +
    '2 <span class="sw e2"></span>3 <span class="sw e3"></span>≥4 <span class="sw e4"></span></span>');
  root.appendChild(legend);
  var status = el("div", { "class": "status" },
    '<span id="b-count"></span><button id="b-prev" type="button">‹ prev</button><span id="b-page"></span>' +
    '<button id="b-next" type="button">next ›</button><span class="summary" id="b-summary"></span>');
  root.appendChild(status);
  var list = el("div", { id: "b-rows" });
  root.appendChild(list);

  var $ = function (id) { return document.getElementById(id); };
  var state = { page: 0, order: [] };

  function apaError(ans, u, k) {
    if (!ans || !ans.p || !u.ref || ans.p[k] === null || u.ref[k] === null) return null;
    return Math.abs(ans.p[k] - u.ref[k]);
  }
  function detectionErrors(m) {
    if (!m) return null;
    var n = 0;
    for (var i = 0; i < m.o.length; i++) if (m.o[i] !== "a" && m.o[i] !== "c") n++;
    return n;
  }
  function desc(get) {  // larger first, missing values last, then by id
    return function (a, b) {
      var x = get(a), y = get(b);
      if (x === y) return UTTS[a].id < UTTS[b].id ? -1 : 1;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return y - x;
    };
  }

  function update(resetPage) {
    var view = DATA.answers[$("f-view").value], task = $("f-task").value;
    var k = ASPECTS.indexOf($("f-aspect").value), minErr = Number($("f-min-error").value) || 0;
    var unparsed = $("f-unparsed").checked, speaker = $("f-speaker").value;
    var search = $("f-search").value.trim().toUpperCase(), sort = $("f-sort").value;
    var order = [];
    for (var i = 0; i < UTTS.length; i++) {
      var u = UTTS[i], a = view.apa[i], m = view.mdd[i];
      var hasA = !!a && task !== "mdd", hasM = !!m && task !== "apa";
      if (!hasA && !hasM) continue;
      if (unparsed && !((hasA && !a.p) || (hasM && m.p === null))) continue;
      if (minErr > 0 && task !== "mdd") { var e = apaError(a, u, k); if (e === null || e < minErr) continue; }
      if (speaker && u.speaker !== speaker) continue;
      if (search && u.id.toUpperCase().indexOf(search) < 0 && (u.text || "").toUpperCase().indexOf(search) < 0) continue;
      order.push(i);
    }
    var cmp = {
      "id": function (x, y) { return UTTS[x].id < UTTS[y].id ? -1 : 1; },
      "speaker": function (x, y) {
        var s = UTTS[x].speaker.localeCompare(UTTS[y].speaker);
        return s || (UTTS[x].id < UTTS[y].id ? -1 : 1);
      },
      "apa-error": desc(function (i) { return apaError(view.apa[i], UTTS[i], k); }),
      "per": desc(function (i) { return view.mdd[i] ? view.mdd[i].per : null; }),
      "detection": desc(function (i) { return detectionErrors(view.mdd[i]); }),
      "mispronounced": desc(function (i) { return UTTS[i].mis; })
    }[sort];
    order.sort(cmp);
    state.order = order;
    if (resetPage) state.page = 0;
    var nA = 0, pA = 0, nM = 0, pM = 0;
    view.apa.forEach(function (x) { if (x) { nA++; if (x.p) pA++; } });
    view.mdd.forEach(function (x) { if (x) { nM++; if (x.p !== null) pM++; } });
    $("b-summary").textContent = "this checkpoint: APA answers parsed " + pA + " / " + nA + ", MDD " + pM + " / " + nM;
    draw();
  }

  function draw() {
    var size = Number($("f-page-size").value), n = state.order.length;
    var pages = Math.max(1, Math.ceil(n / size));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * size, end = Math.min(n, start + size);
    $("b-count").textContent = n + " of " + UTTS.length + " utterances" + (n ? " (showing " + (start + 1) + "–" + end + ")" : "");
    $("b-page").textContent = "page " + (state.page + 1) + " / " + pages;
    $("b-prev").disabled = state.page === 0;
    $("b-next").disabled = state.page >= pages - 1;
    var view = DATA.answers[$("f-view").value], task = $("f-task").value;
    var parts = [];
    for (var j = start; j < end; j++) parts.push(row(state.order[j], view, task));
    list.innerHTML = parts.length ? parts.join("") : '<p class="empty">No utterance matches these filters.</p>';
  }

  function scoresBlock(u, a) {
    var html = '<div class="block"><h4>APA scores</h4>';
    if (!a.p) {
      html += '<span class="badge">unparsed answer</span><pre class="raw">' + esc(a.raw || "") + "</pre>";
      html += '<table class="scores"><tr><th></th>' + ASPECTS.map(function (x) { return "<th>" + esc(x) + "</th>"; }).join("") +
        "</tr><tr><th>human</th>" + ASPECTS.map(function (x, k) {
          return "<td>" + (u.ref && u.ref[k] !== null ? u.ref[k] : "n/a") + "</td>";
        }).join("") + "</tr></table>";
      return html + "</div>";
    }
    html += '<table class="scores"><tr><th></th>' + ASPECTS.map(function (x) { return "<th>" + esc(x) + "</th>"; }).join("") + "</tr>";
    html += "<tr><th>human</th>" + ASPECTS.map(function (x, k) {
      return "<td>" + (u.ref && u.ref[k] !== null ? u.ref[k] : "n/a") + "</td>";
    }).join("") + "</tr>";
    html += "<tr><th>model</th>" + ASPECTS.map(function (x, k) {
      var e = apaError(a, u, k), cls = e === null ? "na" : "e" + Math.min(4, e);
      var title = e === null ? "" : ' title="|error| ' + e + '"';
      return '<td class="' + cls + '"' + title + ">" + (a.p[k] === null ? "n/a" : esc(a.p[k])) + "</td>";
    }).join("") + "</tr></table>";
    return html + "</div>";
  }

  function phonesBlock(u, m) {
    var html = '<div class="block"><h4>MDD</h4>';
    html += '<div class="line"><b>words said:</b> ' + esc(u.words || "") + "</div>";
    if (m.p === null) {
      html += '<div class="line"><b>model:</b> <span class="badge">unparsed answer</span></div><pre class="raw">' +
        esc(m.raw || "") + "</pre>";
    } else {
      html += '<div class="line"><b>words recognised:</b> ' + esc(m.w || "") + " <b>(WER " + fmt(m.wer, 2) + ")</b></div>";
      html += '<div class="line"><b>phones recognised:</b> <span class="mono">' + esc(m.p || "—") + "</span></div>";
    }
    var pos = u.pos || [], heard = m.h ? m.h.split(" ") : [];
    if (pos.length) {
      var canon = "", said = "", rec = "";
      for (var i = 0; i < pos.length; i++) {
        var o = m.o[i] || "", mis = pos[i][0] !== pos[i][1];
        var title = ' title="' + esc((OUTCOMES[o] || ["", ""])[1]) + '"';
        canon += "<td>" + esc(pos[i][0] === EPS ? "–" : pos[i][0]) + "</td>";
        said += '<td class="' + (mis ? "mis" : "") + '">' + esc(pos[i][1] === EPS ? "–" : pos[i][1]) + "</td>";
        rec += '<td class="o-' + o + '"' + title + ">" + esc(heard[i] === EPS || heard[i] === undefined ? "–" : heard[i]) + "</td>";
      }
      html += '<div class="scroll"><table class="phones"><tr><th>canonical</th>' + canon + "</tr><tr><th>annotated</th>" +
        said + "</tr><tr><th>recognised</th>" + rec + "</tr></table></div>";
      var counts = { a: 0, r: 0, f: 0, c: 0, d: 0 };
      for (var j = 0; j < m.o.length; j++) counts[m.o[j]]++;
      html += '<div class="line"><b>PER</b> ' + fmt(m.per, 2) + " · TA " + counts.a + " · FR " + counts.r +
        " · FA " + counts.f + " · TR " + (counts.c + counts.d) + " (CD " + counts.c + ", DE " + counts.d + ")" +
        " · phones the model inserted are not scored</div>";
    }
    return html + "</div>";
  }

  function row(i, view, task) {
    var u = UTTS[i], a = view.apa[i], m = view.mdd[i];
    var audio = u.audio ? '<audio controls preload="none" src="' + esc(u.audio) + '"></audio>'
                        : '<span class="na">no audio</span>';
    var html = '<div class="utt" data-id="' + esc(u.id) + '"><div class="utt-head"><span class="id">' + esc(u.id) +
      '</span><span class="spk">speaker ' + esc(u.speaker || "n/a") + "</span>" + audio + "</div>" +
      '<div class="utt-text">' + esc(u.text || "") + '</div><div class="blocks">';
    if (a && task !== "mdd") html += scoresBlock(u, a);
    if (m && task !== "apa") html += phonesBlock(u, m);
    return html + "</div></div>";
  }

  ["f-view", "f-task", "f-aspect", "f-min-error", "f-unparsed", "f-speaker", "f-sort", "f-page-size"].forEach(function (id) {
    $(id).addEventListener("change", function () { update(true); });
  });
  $("f-search").addEventListener("input", function () { update(true); });
  $("b-prev").addEventListener("click", function () { state.page--; draw(); });
  $("b-next").addEventListener("click", function () { state.page++; draw(); });
  $("f-page-size").value = "50";
  update(true);
})();
