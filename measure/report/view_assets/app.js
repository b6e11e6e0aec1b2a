// The run viewer: reads window.VC (view/data.js, written by `python -m measure view`) and
// renders the overview, the samples, one sample and two-run buckets from the URL hash.
// No network: everything it shows is in data.js or in files beside it.
"use strict";
(() => {
  const D = window.VC;
  const F = D.fields;
  const PAGE = 50;
  const LETTERS = "ABCDEFGHIJ";
  const app = document.getElementById("app");
  const key = (qid, model, variant) => qid + "\u0000" + model + "\u0000" + variant;
  const P = D.predictions.map((r, i) => {
    const q = D.questions[r[0]];
    return {i, qid: q[0], video: q[1], type: F.type[q[2]], template: F.template[q[3]], verb: F.verb[q[4]],
            text: q[5], choices: q[6], answer: q[7], model: F.model[r[1]], variant: F.variant[r[2]],
            status: F.status[r[3]], correct: r[4] === 1, reply: r[5], latency: r[6], attempts: r[7], error: r[8],
            probs: r[9], frames: r[10], tokens: r[11], reasoning: r[12], verdicts: (D.verdicts || {})[i] || []};
  });
  const byKey = new Map(P.map(p => [key(p.qid, p.model, p.variant), p]));
  // An open question is right or wrong by its first valid verdict (until judged: "unjudged").
  const judged = p => p.verdicts.find(v => v[1] === "ok");
  const outcome = p => p.status === "error" ? "error" : p.status === "invalid" ? "invalid"
    : p.type === "open" ? (judged(p) ? (judged(p)[2] === "yes" ? "correct" : "wrong") : "unjudged")
    : p.correct ? "correct" : "wrong";
  const OUTCOMES = ["correct", "wrong", "invalid", "error", "unjudged", "scored"];

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e[k] = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  }
  const num = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x)) ? "n/a" : Number(x).toFixed(d);
  const pval = x => (x === null || x === undefined) ? "n/a" : x < 0.0001 ? x.toExponential(1) : x.toFixed(4);
  const samplesHref = params => "#samples?" + new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  const note = text => el("span", {class: "note", text});

  // ---------- filtering ----------
  function changed(p, f) {  // p is side b; its pair on side a is (vs_model, vs_variant)
    const a = byKey.get(key(p.qid, f.vs_model, f.vs_variant));
    if (!a || a.status === "error" || p.status === "error") return false;
    return f.change === "only_a" ? (a.correct && !p.correct) : (!a.correct && p.correct);
  }
  function filtered(f) {
    const q = (f.q || "").toLowerCase();
    return P.filter(p => (!f.model || p.model === f.model) && (!f.variant || p.variant === f.variant)
      && (!f.type || f.type === "all" || p.type === f.type) && (!f.template || p.template === f.template)
      && (!f.verb || p.verb === f.verb)
      && (!f.outcome || (f.outcome === "scored" ? p.status !== "error" : outcome(p) === f.outcome))
      && (!q || p.text.toLowerCase().includes(q) || p.video.toLowerCase().includes(q))
      && (!f.change || changed(p, f)));
  }

  // ---------- overview ----------
  function accuracyTable(rows) {
    const cols = ["object_acc", "verb_acc", "overall_acc", "n", "invalid", "errors"];
    const target = (r, c) => ({model: r.model, variant: r.variant,
      type: c === "object_acc" ? "object" : c === "verb_acc" ? "verb" : "",
      outcome: c === "invalid" ? "invalid" : c === "errors" ? "error" : "scored"});
    return el("table", {id: "accuracy"},
      el("tr", {}, ["model", "variant", ...cols].map(c => el("th", {text: c}))),
      rows.map(r => el("tr", {}, el("td", {class: "text", text: r.model}), el("td", {class: "text", text: r.variant}),
        cols.map(c => el("td", {"data-cell": `${r.model}|${r.variant}|${c}`},
          el("a", {href: samplesHref(target(r, c)), text: c.endsWith("_acc") ? num(r[c]) : String(r[c])}))))));
  }

  // A paired table: `sides(row)` gives [model_a, variant_a, model_b, variant_b].
  function pairedTable(name, rows, labels, sides) {
    if (!rows.length) return el("p", {class: "note", text: "(none)"});
    const head = [...labels, "type", "n", "videos", "acc_a", "acc_b", "delta", "95 % CI", "only_a", "only_b",
                  "p_mcnemar", "p_video", "p_holm", "mde"];
    return el("table", {id: name}, el("tr", {}, head.map(c => el("th", {text: c}))),
      rows.map((r, i) => {
        const [ma, va, mb, vb] = sides(r);
        const base = {model: mb, variant: vb, type: r.type};
        const side = {model: ma, variant: va, type: r.type, outcome: "scored"};
        const cell = (c, content) => el("td", {"data-cell": `${name}|${i}|${c}`}, content);
        return el("tr", {class: r.survives_holm ? "sig" : null},
          labels.map(l => el("td", {class: "text", text: r[l]})), el("td", {text: r.type}),
          cell("n", el("a", {href: samplesHref({...base, outcome: "scored"}), text: r.n})), 
          cell("videos", el("a", {href: samplesHref({...base, outcome: "scored"}), text: r.videos})),
          cell("acc_a", el("a", {href: samplesHref(side), text: num(r.acc_a)})),
          cell("acc_b", el("a", {href: samplesHref({...base, outcome: "scored"}), text: num(r.acc_b)})), cell("delta", num(r.delta)),
          cell("ci", `[${num(r.ci_low)}, ${num(r.ci_high)}]`),
          cell("only_a", el("a", {href: samplesHref({...base, vs_model: ma, vs_variant: va, change: "only_a"}), text: r.only_a})),
          cell("only_b", el("a", {href: samplesHref({...base, vs_model: ma, vs_variant: va, change: "only_b"}), text: r.only_b})),
          cell("p_mcnemar", pval(r.p_mcnemar)), cell("p_video", pval(r.p_video)), cell("p_holm", pval(r.p_holm)),
          cell("mde", num(r.mde, 1)));
      }));
  }

  // A family of tests as report.md shows it (the ledger's rows: measure/report/ledger.py):
  // the difference and its interval in the row's unit, Holm's p, and the reason to be careful.
  const DIGITS = {"pts": 1, "rho x 100": 1};
  const signed = (x, d) => (x > 0 ? "+" : "") + num(x, d);
  function familyTable(name, rows) {
    const head = ["comparison", "difference", "95 % CI", "unit", "p (Holm)", "significant", "caution"];
    return el("table", {class: "family-tests", "data-family": name}, el("tr", {}, head.map(c => el("th", {text: c}))),
      rows.map((r, i) => {
        const d = DIGITS[r.unit] ?? 2;
        return el("tr", {class: r.significant ? "sig" : null},
          el("td", {class: "text", text: r.comparison}),
          el("td", {"data-cell": `${name}|${i}|delta`, text: signed(r.delta, d)}),
          el("td", {text: `[${num(r.ci_low, d)}, ${num(r.ci_high, d)}]`}), el("td", {class: "text", text: r.unit}),
          el("td", {text: pval(r.p_holm)}), el("td", {text: r.significant ? "yes" : "no"}),
          el("td", {class: "text", text: r.caution}));
      }));
  }

  // The first screen is report.md's summary: what was asked, the primary comparisons, the
  // declared causal contrasts, the summary's sentences; then every other family, folded.
  function overview() {
    const R = D.report;
    const stats = R.statistics || {};
    const ledger = R.ledger || [];
    const families = [...new Set(ledger.map(r => r.family))];
    const rowsOf = family => ledger.filter(r => r.family === family);
    const significant = rows => rows.filter(r => r.significant).length;
    const summary = R.summary || [];
    return [
      el("h2", {text: "Summary"}),
      el("p", {id: "scope", text: summary[0] || ""}),
      el("h3", {text: "Primary comparisons (what the study declares; Holm within them)"}),
      rowsOf("primary").length ? familyTable("primary", rowsOf("primary"))
        : note("(no primary comparison: cued vs plain, adapter vs base on plain clips)"),
      rowsOf("causal").length ? [el("h3", {text: "Declared causal contrasts (on the model organism, its known effects)"}),
        familyTable("causal", rowsOf("causal"))] : null,
      el("ul", {id: "summary"}, summary.slice(1).map(x => el("li", {text: x}))),
      el("h2", {text: "Tests by family"}),
      families.filter(f => f !== "primary" && f !== "causal").map(family =>
        el("details", {class: "family", "data-family": family},
          el("summary", {text: `${family}: ${significant(rowsOf(family))} of ${rowsOf(family).length} significant after Holm`}),
          familyTable(family, rowsOf(family)))),
      R.warnings.map(w => el("div", {class: "warn", text: w})),
      el("h2", {text: "Accuracy (%)"}), note("Every number links to the samples behind it."), accuracyTable(R.accuracy),
      el("h2", {text: "Paired comparisons: b − a on the same questions"}),
      el("ul", {}, ["ci", "p_mcnemar", "p_video", "p_holm", "mde"].filter(k => stats[k]).map(k => el("li", {text: `${k}: ${stats[k]}`}))),
      note("only_a: a right, b wrong; only_b: b right, a wrong (McNemar's discordant cells). Bold rows survive Holm."),
      el("h3", {text: "Shortcut audit: plain (a) vs controls (b)"}),
      pairedTable("audit", R.audit, ["model", "control"], r => [r.model, "plain", r.model, r.control]),
      el("h3", {text: "Cued − plain"}),
      pairedTable("cued_vs_plain", R.cued_vs_plain, ["model", "variant"], r => [r.model, "plain", r.model, r.variant]),
      el("h3", {text: "Adapter − base"}),
      pairedTable("adapter_vs_base", R.adapter_vs_base, ["adapter", "base", "variant"],
                  r => [r.base, r.variant, r.adapter, r.variant]),
      el("h2", {text: "Plots"}),
      el("img", {class: "plot", src: "accuracy.png", alt: "accuracy per model and variant"}),
      el("img", {class: "plot", src: "deltas.png", alt: "deltas with 95 % CIs"}),
    ];
  }

  // ---------- samples ----------
  function setParam(f, name, value) {
    const next = {...f, [name]: value};
    delete next.page;
    location.hash = samplesHref(next);
  }
  function select(name, f, options) {
    return el("label", {}, name, el("select", {name, onchange: e => setParam(f, name, e.target.value)},
      el("option", {value: "", text: "(any)"}),
      options.map(o => el("option", {value: o, text: o, selected: f[name] === o}))));
  }
  function pager(f, total, href) {
    const pages = Math.max(1, Math.ceil(total / PAGE));
    const page = Math.min(Math.max(0, +(f.page || 0)), pages - 1);
    const go = p => href({...f, page: String(p)});
    return [page, el("div", {class: "pager"},
      page > 0 ? el("a", {href: go(page - 1), id: "prev", text: "← previous"}) : "",
      el("span", {text: `page ${page + 1} of ${pages}`}),
      page < pages - 1 ? el("a", {href: go(page + 1), id: "next", text: "next →"}) : "")];
  }
  function sampleRow(p, extra = []) {
    return el("tr", {class: "pick", "data-i": p.i, onclick: () => { location.hash = "#sample/" + p.i; }},
      el("td", {class: "text", text: p.qid}), el("td", {class: "text", text: p.video}),
      el("td", {class: "text", text: p.model}), el("td", {class: "text", text: p.variant}),
      el("td", {class: "text", text: p.type}), el("td", {class: "text", text: p.text}),
      el("td", {class: "text", text: p.reply ?? ""}), el("td", {class: "text", text: p.answer}),
      el("td", {class: outcome(p) === "correct" ? "ok" : outcome(p), text: outcome(p)}), ...extra);
  }
  const HEAD = ["question", "video", "model", "variant", "type", "text", "reply", "answer", "outcome"];

  function samples(f) {
    const rows = filtered(f);
    const [page, nav] = pager(f, rows.length, samplesHref);
    const sorted = name => [...F[name]].sort();
    const extra = f.change ? el("p", {class: "note", text:
      `Only questions where ${f.change === "only_a" ? `${f.vs_model} / ${f.vs_variant} was right and this one wrong`
                                                    : `this one was right and ${f.vs_model} / ${f.vs_variant} wrong`}.`}) : "";
    return [
      el("div", {class: "filters"}, ["model", "variant", "type", "template", "verb"].map(n => select(n, f, sorted(n))),
        select("outcome", f, OUTCOMES),
        el("label", {}, "search text or video id", el("input", {name: "q", type: "search", value: f.q || "",
          onchange: e => setParam(f, "q", e.target.value)})),
        el("a", {href: "#samples", text: "clear"})),
      extra, el("p", {id: "count", text: `${rows.length} samples`}), nav,
      el("table", {id: "samples"}, el("tr", {}, [...HEAD, "latency s"].map(c => el("th", {text: c}))),
        rows.slice(page * PAGE, (page + 1) * PAGE).map(p => sampleRow(p, [el("td", {text: num(p.latency)})]))),
    ];
  }

  // ---------- one sample ----------
  function strip(p, variant) {
    const other = byKey.get(key(p.qid, p.model, variant)) || P.find(x => x.qid === p.qid && x.variant === variant);
    const box = el("div", {class: "strip", "data-variant": variant},
      el("h4", {}, variant, other && other !== p ? [" · ", el("a", {href: "#sample/" + other.i,
        text: `its answer: ${other.reply ?? other.status} (${outcome(other)})`})] : other === p ? " · this sample" : ""));
    const thumbs = D.thumbs[`${variant}/${p.video}`];
    if (variant === "blind") box.append(note("no clip: the question text alone"));
    else if (!other) box.append(note("not asked in this run"));
    else if (!other.frames) box.append(note("frames not recorded: the whole clip was sent and the server sampled it"));
    else if (thumbs === undefined || typeof thumbs === "string") box.append(note(thumbs && thumbs !== "missing" ? thumbs : "clip missing"));
    else other.frames.forEach(idx => box.append(el("img", {src: `view/thumbs/${encodeURIComponent(variant)}/${encodeURIComponent(p.video)}_${idx}.jpg`,
                                                           alt: `${variant} frame ${idx}`, title: `frame ${idx}`})));
    return box;
  }
  // where the model looked: interpret's heat maps of this question, every variant, one layer group
  function looked(p) {
    const drawn = D.variants.filter(v => (D.heatmaps || {})[`${p.model}/${p.qid}/${v}`]);
    if (!drawn.length) return el("p", {class: "note", id: "heatmaps",
      text: "no heat maps for this sample (python -m interpret RUN draws them for the first questions)"});
    const groups = D.heatmaps[`${p.model}/${p.qid}/${drawn[0]}`];
    const src = (v, g) => ["interpret", "heatmaps", p.model, p.qid, `${v}.${g}.png`].map(encodeURIComponent).join("/");
    const imgs = drawn.map(v => el("img", {src: src(v, groups[0]), alt: `${v} attention`, "data-variant": v}));
    const pick = el("select", {name: "layers", onchange: e => imgs.forEach(img =>
      img.src = src(img.dataset.variant, e.target.value))}, groups.map(g => el("option", {value: g, text: g})));
    const effect = v => (D.effects || []).includes(`${p.model}/${p.qid}/${v}`)
      ? el("figure", {class: "effect"}, el("img", {src: src(v, "effect"), alt: `${v} effect`}),
           el("figcaption", {text: "occlusion (UNVALIDATED: it fails its known-answer check on the model organism): the window centred on each token ablated, change in the answer's log-probability (blue: it lowers)"}))
      : null;
    return el("div", {id: "heatmaps"},
      el("h3", {text: "Where the model looked: attention from the answer position to each frame block, and what each block did"}),
      el("label", {}, "language layers ", pick),
      drawn.map((v, k) => el("div", {class: "strip"}, el("h4", {text: v}),
        el("div", {class: "side"}, el("figure", {}, imgs[k], el("figcaption", {text: "attention"})), effect(v)))),
      el("p", {class: "note", text: "Attention is not explanation: the region ablations (python -m interpret RUN --effects ablation) and the masked variants are the causal checks."}));
  }
  function sample(i) {
    const p = P[i];
    if (!p) return note(`no sample ${i}`);
    const picked = p.choices.indexOf(p.reply) >= 0 ? p.choices.indexOf(p.reply) : LETTERS.indexOf(p.reply ?? "?");
    return [
      el("p", {}, el("a", {href: "#samples", onclick: e => { if (history.length > 1) { e.preventDefault(); history.back(); } },
                           text: "← back"})),
      el("h2", {id: "sample-title", text: `${p.qid} · ${p.model} · ${p.variant}`}),
      el("p", {class: "text", id: "question", text: p.text || "(question text not found: the dataset is not beside this run)"}),
      el("ul", {class: "choices", id: "choices"}, p.choices.map((c, k) => el("li", {"data-choice": c,
          class: c === p.answer ? "ok" : k === picked ? "wrong" : null},
        `${LETTERS[k]}. ${c}`, c === p.answer ? " ✓ right answer" : "", k === picked ? " ◀ picked" : "",
        p.probs && p.probs[c] !== undefined ? [el("span", {class: "bar", style: `width:${Math.round(200 * p.probs[c])}px`}),
                                                ` ${(100 * p.probs[c]).toFixed(1)} %`] : ""))),
      p.type === "open" ? el("table", {id: "verdicts"},
        el("tr", {}, ["judge", "status", "verdict", "score (0-5)", "error"].map(c => el("th", {text: c}))),
        p.verdicts.length ? p.verdicts.map(v => el("tr", {}, v.map(x => el("td", {class: "text", text: x ?? ""}))))
                          : el("tr", {}, el("td", {colspan: 5, class: "note", text: "not judged yet: python -m measure judge RUN"}))) : "",
      el("table", {id: "meta"}, [["video", p.video], ["reference answer", p.answer], ["type", p.type], ["template", p.template], ["verb", p.verb],
        ["outcome", outcome(p)], ["reply", p.reply ?? "(none)"],
        ...(p.reasoning != null ? [["reasoning (not scored)", p.reasoning]] : []),
        ["latency s", num(p.latency, 3)], ["attempts", p.attempts],
        ["prompt tokens", p.tokens ?? "n/a"], ["frames sent", p.frames ? p.frames.join(", ") : "n/a"],
        ["error", p.error ?? ""]].map(([k, v]) => el("tr", {}, el("th", {text: k}), el("td", {class: "text", text: String(v)})))),
      el("h3", {text: "Frames sent, every variant of this clip"}),
      el("div", {class: "strips", id: "strips"}, D.variants.map(v => strip(p, v))),
      looked(p),
    ];
  }

  // ---------- two runs ----------
  function compare(f) {
    const C = D.compare;
    if (!C) return note("Written for one run: `python -m measure view RUN_A RUN_B` adds this page.");
    const names = ["fixed", "regressed", "still failing", "still right"];
    const cells = new Map();
    for (const name of names) for (const [i] of C.buckets[name]) {
      const k = P[i].model + "\u0000" + P[i].variant;
      if (!cells.has(k)) cells.set(k, Object.fromEntries(names.map(n => [n, 0])));
      cells.get(k)[name] += 1;
    }
    const href = params => "#compare?" + new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
    const out = [el("h2", {text: `${D.run} (A) → ${C.run} (B): the questions both scored`}),
      note("fixed: A wrong, B right; regressed: A right, B wrong (McNemar's discordant cells)."),
      el("table", {id: "buckets"}, el("tr", {}, ["model", "variant", ...names].map(c => el("th", {text: c}))),
        [...cells.entries()].sort().map(([k, counts]) => {
          const [model, variant] = k.split("\u0000");
          return el("tr", {}, el("td", {class: "text", text: model}), el("td", {class: "text", text: variant}),
            names.map(n => el("td", {"data-cell": `${model}|${variant}|${n}`},
              el("a", {href: href({bucket: n, model, variant}), text: counts[n]}))));
        }))];
    if (f.bucket) {
      const rows = C.buckets[f.bucket].filter(([i]) => (!f.model || P[i].model === f.model) && (!f.variant || P[i].variant === f.variant));
      const [page, nav] = pager(f, rows.length, href);
      out.push(el("h3", {text: `${f.bucket}: ${f.model || "all models"}, ${f.variant || "all variants"}`}),
        el("p", {id: "count", text: `${rows.length} questions`}), nav,
        el("table", {id: "bucket"}, el("tr", {}, [...HEAD, "B reply"].map(c => el("th", {text: c}))),
          rows.slice(page * PAGE, (page + 1) * PAGE).map(([i, replyB]) => sampleRow(P[i], [el("td", {class: "text", text: replyB ?? ""})]))));
    }
    return out;
  }

  // ---------- routing ----------
  function route() {
    const [path, query] = location.hash.replace(/^#/, "").split("?");
    const f = Object.fromEntries(new URLSearchParams(query || ""));
    const view = path.startsWith("sample/") ? sample(+path.slice(7)) : path === "samples" ? samples(f)
               : path === "compare" ? compare(f) : overview();
    app.replaceChildren(...[view].flat(Infinity));
    document.body.dataset.hash = location.hash;  // what is rendered (tests wait on it)
  }
  document.getElementById("nav-compare").hidden = !D.compare;
  window.addEventListener("hashchange", route);
  route();
  window.VC_READY = performance.now();
})();
