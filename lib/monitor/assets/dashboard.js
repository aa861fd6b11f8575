// kiln's live dashboard page. It draws what the training or serving process sends over
// Server-Sent Events (/events) and computes no figure itself: every number shown is one the
// process published. Long histories are thinned for drawing only (per bucket, the minimum and
// maximum of every series are kept, so spikes stay visible); the data held here stays exact.
(() => {
  'use strict';
  /* global uPlot */
  const MAX_POINTS = 2000; // drawn per run and chart before thinning starts
  const BUCKETS = 1000;
  const COLORS = ['#d9480f', '#1c7ed6', '#2b8a3e', '#7048e8', '#e8590c', '#0c8599', '#c2255c', '#5c940d', '#495057'];
  const RUN_FIELDS = ['step', 'loss', 'valLoss', 'gradNorm', 'lr', 'tokensPerSecond', 'stepMs', 'forwardMs', 'backwardMs', 'optimizerMs',
    'communicationMs', 'mfu', 'peakMemoryBytes',
    // data-parallel runs (lib/parallel): drawn in the Communication panel
    'commExposedMs', 'commBytes', 'commPayloadBytes', 'commBytesPerToken', 'algBandwidthGBs', 'busBandwidthGBs', 'scalingEfficiency'];
  // what a data-parallel run says of itself (the latest value of each is shown in its row)
  const DIST_FIELDS = ['worldSize', 'syncMode', 'buckets', 'innerSteps', 'quantBits', 'outerSteps'];
  const SERVE_FIELDS = ['time', 'running', 'waiting', 'tokensPerSecond', 'kvUsage', 'prefixCacheHitRate', 'ttftP50Ms', 'ttftP90Ms', 'ttftP99Ms',
    'itlP50Ms', 'itlP90Ms', 'itlP99Ms', 'tpotP50Ms', 'requestsFinished'];

  const mib = (v) => (v == null ? '' : (v / 2 ** 20).toFixed(v < 10 * 2 ** 20 ? 1 : 0) + ' MiB');
  const pct = (v) => (v == null ? '' : (v !== 0 && Math.abs(v) < 0.001 ? +(100 * v).toPrecision(2) + '' : (100 * v).toFixed(v < 0.1 ? 2 : 1)) + '%');
  const num = (v) => (v == null ? '' : Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : +v.toPrecision(4) + '');
  const ms = (v) => (v == null ? '' : (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + ' ms');
  const bytes = (v) => {
    if (v == null) return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(v) >= 1024 * 2 ** (10 * i) && i < units.length - 1) i++;
    return +(v / 2 ** (10 * i)).toPrecision(3) + ' ' + units[i];
  };
  const gbs = (v) => (v == null ? '' : +v.toPrecision(3) + ' GB/s');
  const duration = (s) => {
    if (s == null) return '';
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
  };

  // What each training chart draws: fields of a run, each becoming one series per run.
  const TRAINING_CHARTS = [
    { id: 'loss', title: 'Loss (train, validation)', fields: [{ key: 'loss', label: 'loss' }, { key: 'valLoss', label: 'val', dash: [6, 4], points: true }], fmt: num },
    { id: 'tokens', title: 'Tokens / s', fields: [{ key: 'tokensPerSecond', label: 'tok/s' }], fmt: num },
    { id: 'mfu', title: 'MFU', fields: [{ key: 'mfu', label: 'MFU' }], fmt: pct },
    {
      id: 'latency', title: 'Step latency: forward / backward / optimizer (/ communication)', fmt: ms,
      fields: [{ key: 'stepMs', label: 'step', width: 2 }, { key: 'forwardMs', label: 'fwd', dash: [2, 3] }, { key: 'backwardMs', label: 'bwd', dash: [8, 3] },
        { key: 'optimizerMs', label: 'opt', dash: [1, 2] }, { key: 'communicationMs', label: 'comm', dash: [10, 4, 2, 4] }],
    },
    { id: 'gradNorm', title: 'Gradient norm (before clipping)', fields: [{ key: 'gradNorm', label: '|g|' }], fmt: num },
    { id: 'lr', title: 'Learning-rate multiplier', fields: [{ key: 'lr', label: 'lr×' }], fmt: num },
    { id: 'memory', title: 'Peak memory', fields: [{ key: 'peakMemoryBytes', label: 'peak' }], fmt: mib },
  ];
  // the Communication panel: data-parallel runs only (a run whose steps carry lib/parallel's figures)
  const COMMUNICATION_CHARTS = [
    { id: 'commTime', title: 'Communication per step: time in collectives / exposed (not hidden under compute)', fmt: ms,
      fields: [{ key: 'communicationMs', label: 'comm' }, { key: 'commExposedMs', label: 'exposed', dash: [6, 4] }] },
    { id: 'commBytes', title: 'Bytes per step: sent on the wire / payload reduced', fmt: bytes,
      fields: [{ key: 'commBytes', label: 'sent' }, { key: 'commPayloadBytes', label: 'payload', dash: [6, 4] }] },
    { id: 'commPerToken', title: 'Bytes sent per token', fields: [{ key: 'commBytesPerToken', label: 'B/token' }], fmt: bytes },
    { id: 'bandwidth', title: 'Effective bandwidth: algbw / busbw (nccl-tests; 0 on steps without collectives)', fmt: gbs,
      fields: [{ key: 'algBandwidthGBs', label: 'algbw' }, { key: 'busBandwidthGBs', label: 'busbw', dash: [6, 4] }] },
    { id: 'scaling', title: 'Scaling efficiency against one rank', fields: [{ key: 'scalingEfficiency', label: 'efficiency' }], fmt: pct },
  ];
  const SERVING_CHARTS = [
    { id: 'requests', title: 'Requests running / waiting', fields: [{ key: 'running', label: 'running' }, { key: 'waiting', label: 'waiting', dash: [6, 4] }], fmt: num },
    { id: 'serveTokens', title: 'Output tokens / s', fields: [{ key: 'tokensPerSecond', label: 'tok/s' }], fmt: num },
    { id: 'ttft', title: 'Time to first token (window percentiles)', fields: [{ key: 'ttftP50Ms', label: 'p50' }, { key: 'ttftP90Ms', label: 'p90', dash: [6, 4] }, { key: 'ttftP99Ms', label: 'p99', dash: [2, 3] }], fmt: ms },
    { id: 'itl', title: 'Inter-token latency (window percentiles)', fields: [{ key: 'itlP50Ms', label: 'p50' }, { key: 'itlP90Ms', label: 'p90', dash: [6, 4] }, { key: 'itlP99Ms', label: 'p99', dash: [2, 3] }], fmt: ms },
    { id: 'cache', title: 'KV cache usage, prefix-cache hit rate', fields: [{ key: 'kvUsage', label: 'KV usage' }, { key: 'prefixCacheHitRate', label: 'prefix hits', dash: [6, 4] }], fmt: pct },
  ];

  const state = { runs: new Map(), serving: null, title: 'kiln dashboard', renders: 0, renderMs: 0, events: 0 };
  const charts = new Map(); // id -> { plot, key, el, spec, displayed }
  let dirty = false;

  function columns(fields) {
    const c = {};
    for (const f of fields) c[f] = [];
    return c;
  }
  function append(cols, fields, record) {
    for (const f of fields) cols[f].push(record[f] ?? null);
  }

  function loadSnapshot(s) {
    state.title = s.title || state.title;
    state.runs.clear();
    for (const r of s.runs) {
      const run = { status: r, cols: columns(RUN_FIELDS), dist: null };
      for (const p of r.data) addPoint(run, p);
      delete run.status.data;
      state.runs.set(r.id, run);
    }
    state.serving = null;
    if (s.serving) {
      state.serving = { model: s.serving.model, cols: columns(SERVE_FIELDS), last: null };
      for (const sample of s.serving.samples) addSample(sample);
    }
    for (const c of charts.values()) c.plot.destroy();
    charts.clear();
    for (const id of ['training-charts', 'communication-charts', 'serving-charts']) document.getElementById(id).textContent = '';
  }

  /** One step of a run: its figures into the columns, its data-parallel settings (latest wins) into run.dist. */
  function addPoint(run, point) {
    append(run.cols, RUN_FIELDS, point);
    for (const f of DIST_FIELDS) {
      if (point[f] == null) continue;
      run.dist = run.dist || {};
      run.dist[f] = point[f];
    }
  }

  /** "2 ranks · sync · 3 buckets", "2 ranks · DiLoCo H=50 · 4-bit · 3 outer steps": what a data-parallel run says of itself. */
  function distLabel(d) {
    const parts = [];
    if (d.worldSize != null) parts.push(`${d.worldSize} rank${d.worldSize === 1 ? '' : 's'}`);
    if (d.syncMode === 'diloco') {
      parts.push(d.innerSteps != null ? `DiLoCo H=${d.innerSteps}` : 'DiLoCo');
      if (d.quantBits != null) parts.push(d.quantBits === 0 ? 'f32 pseudo-gradients' : `${d.quantBits}-bit`);
      if (d.outerSteps != null) parts.push(`${d.outerSteps} outer step${d.outerSteps === 1 ? '' : 's'}`);
    } else {
      if (d.syncMode != null) parts.push(d.syncMode);
      if (d.buckets != null) parts.push(`${d.buckets} bucket${d.buckets === 1 ? '' : 's'}`);
    }
    return parts.join(' · ');
  }

  function addSample(sample) {
    const sv = state.serving || (state.serving = { model: null, cols: columns(SERVE_FIELDS), last: null });
    append(sv.cols, SERVE_FIELDS, { ...sample, time: sample.time / 1e3 });
    sv.last = sample;
  }

  function upsertRun(status) {
    const run = state.runs.get(status.id);
    if (!run) state.runs.set(status.id, { status, cols: columns(RUN_FIELDS), dist: null });
    else {
      if (run.status.generation !== status.generation) {
        run.cols = columns(RUN_FIELDS);
        run.dist = null;
      }
      run.status = status;
    }
  }

  /** Indices to draw: all of them when few, else per bucket the first index and each series' min and max. */
  function thin(cols, keys, n) {
    if (n <= MAX_POINTS) return null;
    const size = Math.ceil(n / BUCKETS);
    const keep = [];
    for (let start = 0; start < n; start += size) {
      const end = Math.min(n, start + size);
      const picked = new Set([start, end - 1]);
      for (const key of keys) {
        const col = cols[key];
        let lo = -1, hi = -1;
        for (let i = start; i < end; i++) {
          const v = col[i];
          if (v == null) continue;
          if (lo < 0 || v < col[lo]) lo = i;
          if (hi < 0 || v > col[hi]) hi = i;
        }
        if (lo >= 0) picked.add(lo);
        if (hi >= 0) picked.add(hi);
      }
      keep.push(...[...picked].sort((a, b) => a - b));
    }
    return keep;
  }

  function table(cols, xKey, keys) {
    const n = cols[xKey].length;
    const idx = thin(cols, keys, n);
    const pick = (col) => (idx ? idx.map((i) => col[i]) : col.slice());
    return [pick(cols[xKey]), ...keys.map((k) => pick(cols[k]))];
  }

  function hasData(col) {
    for (let i = col.length - 1; i >= 0; i--) if (col[i] != null) return true;
    return false;
  }

  function chartElement(containerId, spec) {
    let c = charts.get(spec.id);
    if (c) return c;
    const el = document.createElement('div');
    el.className = 'chart';
    el.dataset.chart = spec.id;
    el.innerHTML = `<h3></h3><div class="plot"></div>`;
    el.querySelector('h3').textContent = spec.title;
    document.getElementById(containerId).appendChild(el);
    c = { el, spec, plot: null, key: '', displayed: 0 };
    charts.set(spec.id, c);
    return c;
  }

  function draw(containerId, spec, groups, time) {
    // groups: [{ name, color, cols, xKey }]; a series per (group, field with data)
    const series = [];
    const tables = [];
    for (const g of groups) {
      const keys = spec.fields.filter((f) => hasData(g.cols[f.key]));
      if (!keys.length) continue;
      tables.push(table(g.cols, g.xKey, keys.map((f) => f.key)));
      for (const f of keys) series.push({ g, f });
    }
    const existing = charts.get(spec.id);
    if (!series.length) {
      if (existing) existing.el.hidden = true;
      return;
    }
    const c = chartElement(containerId, spec);
    c.el.hidden = false;
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    const key = series.map((s) => `${s.g.name}/${s.f.key}`).join('|');
    const width = Math.max(300, c.el.clientWidth - 16);
    if (!c.plot || c.key !== key) {
      if (c.plot) c.plot.destroy();
      const multi = groups.length > 1;
      c.plot = new uPlot({
        width, height: 220,
        scales: { x: { time: !!time } },
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        axes: [{ label: time ? '' : 'step' }, { values: (u, vals) => vals.map(spec.fmt), size: 70 }],
        series: [{ label: time ? 'time' : 'step' }, ...series.map(({ g, f }) => ({
          label: multi || !f.label ? `${g.name} ${f.label}` : f.label,
          // one run: a colour per field; several: a colour per run, a dash per field
          stroke: multi ? g.color : COLORS[spec.fields.indexOf(f) % COLORS.length], width: f.width ?? 1.5, dash: f.dash, spanGaps: true,
          points: { show: f.points ? true : undefined, size: 5 },
          value: (u, v) => spec.fmt(v),
        }))],
      }, data, c.el.querySelector('.plot'));
      c.key = key;
    } else {
      c.plot.setData(data);
    }
    c.displayed = data[0].length;
    c.series = series.map((s, i) => {
      const drawn = data[i + 1].filter((v) => v != null);
      return { label: `${s.g.name}/${s.f.key}`, points: drawn.length, max: drawn.reduce((a, b) => Math.max(a, b), -Infinity) };
    });
  }

  function renderRuns() {
    const tbody = document.querySelector('#runs tbody');
    const rows = [];
    for (const run of state.runs.values()) {
      const s = run.status;
      const c = run.cols;
      const last = (key) => { const col = c[key]; for (let i = col.length - 1; i >= 0; i--) if (col[i] != null) return col[i]; return null; };
      const color = COLORS[s.id % COLORS.length];
      const total = s.totalSteps != null ? ` / ${s.totalSteps}` : '';
      const progress = s.progress != null ? `<span class="bar"><i style="width:${(100 * s.progress).toFixed(1)}%"></i></span>${(100 * s.progress).toFixed(1)}%` : '<span class="gap">—</span>';
      const cell = (v) => (v === '' || v == null ? '<span class="gap">—</span>' : v);
      const dist = run.dist ? `<span class="dist" data-dist>${escapeHtml(distLabel(run.dist))}</span>` : '';
      rows.push(`<tr data-run="${s.id}"><td><span class="swatch" style="background:${color}"></span>${escapeHtml(s.name)}${dist}</td><td>${s.state}${s.source === 'file' ? ' (file)' : ''}</td>` +
        `<td class="step">${s.step}${total}</td><td>${progress}</td><td>${cell(duration(s.etaS))}</td><td>${cell(duration(s.elapsedS))}</td>` +
        `<td>${cell(num(last('loss')))}</td><td>${cell(num(last('valLoss')))}</td><td>${cell(num(last('tokensPerSecond')))}</td>` +
        `<td>${cell(pct(last('mfu')))}</td><td>${cell(ms(last('stepMs')))}</td><td>${cell(mib(last('peakMemoryBytes')))}</td></tr>`);
    }
    tbody.innerHTML = rows.join('');
  }

  function renderTiles(sample) {
    const tiles = [
      ['running', num(sample.running)], ['waiting', num(sample.waiting)], ['output tokens/s', num(sample.tokensPerSecond)],
      ['TTFT p50', ms(sample.ttftP50Ms)], ['TTFT p99', ms(sample.ttftP99Ms)], ['ITL p50', ms(sample.itlP50Ms)], ['ITL p99', ms(sample.itlP99Ms)],
      ['KV cache usage', pct(sample.kvUsage)], ['prefix-cache hits', pct(sample.prefixCacheHitRate)], ['requests finished', num(sample.requestsFinished)],
    ];
    document.getElementById('serving-tiles').innerHTML = tiles.map(([label, value]) =>
      `<div class="tile" data-tile="${label}"><div class="label">${label}</div><div class="value">${value === '' ? '<span class="gap">—</span>' : value}</div></div>`).join('');
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]);
  }

  function render() {
    dirty = false;
    lastRender = performance.now();
    try {
      drawAll();
    } finally {
      state.renderMs += performance.now() - lastRender;
    }
  }

  function drawAll() {
    state.renders++;
    document.title = state.title;
    document.getElementById('title').textContent = state.title;
    const training = state.runs.size > 0;
    const serving = !!(state.serving && state.serving.cols.time.length);
    document.getElementById('training').hidden = !training;
    document.getElementById('serving').hidden = !serving;
    document.getElementById('empty').hidden = training || serving;
    if (training) {
      renderRuns();
      const groups = [...state.runs.values()].map((r) => ({ name: r.status.name, color: COLORS[r.status.id % COLORS.length], cols: r.cols, xKey: 'step' }));
      for (const spec of TRAINING_CHARTS) draw('training-charts', spec, groups, false);
    }
    const distRuns = [...state.runs.values()].filter((r) => r.dist);
    document.getElementById('communication').hidden = distRuns.length === 0;
    if (distRuns.length) {
      const groups = distRuns.map((r) => ({ name: r.status.name, color: COLORS[r.status.id % COLORS.length], cols: r.cols, xKey: 'step' }));
      for (const spec of COMMUNICATION_CHARTS) draw('communication-charts', spec, groups, false);
    } else {
      for (const spec of COMMUNICATION_CHARTS) if (charts.has(spec.id)) charts.get(spec.id).el.hidden = true;
    }
    if (serving) {
      document.getElementById('model').textContent = state.serving.model ? `(${state.serving.model})` : '';
      renderTiles(state.serving.last);
      for (const spec of SERVING_CHARTS) draw('serving-charts', spec, [{ name: 'engine', color: COLORS[1], cols: state.serving.cols, xKey: 'time' }], true);
    }
  }

  // redraw at most once per MIN_REDRAW_MS: a browser on the training machine then costs it little
  const MIN_REDRAW_MS = 1000;
  let lastRender = -Infinity;
  function schedule() {
    if (dirty) return;
    dirty = true;
    const wait = Math.max(0, lastRender + MIN_REDRAW_MS - performance.now());
    setTimeout(() => requestAnimationFrame(render), wait);
  }

  const connection = document.getElementById('connection');
  const events = new EventSource('/events');
  events.onopen = () => { connection.dataset.state = 'open'; connection.textContent = 'live'; };
  events.onerror = () => { connection.dataset.state = 'error'; connection.textContent = 'disconnected: retrying'; };
  const on = (name, handler) => events.addEventListener(name, (e) => { state.events++; handler(JSON.parse(e.data)); schedule(); });
  on('snapshot', loadSnapshot);
  on('run', upsertRun);
  on('step', ({ run: id, point, status }) => {
    upsertRun(status);
    addPoint(state.runs.get(id), point);
  });
  on('serve', addSample);
  addEventListener('resize', () => {
    for (const c of charts.values()) if (c.plot) c.plot.setSize({ width: Math.max(300, c.el.clientWidth - 16), height: 220 });
  });

  // read-only hooks for tests and for people poking at the page from the console
  window.kilnDashboard = {
    runs: () => [...state.runs.values()].map((r) => ({ ...r.status, stored: r.cols.step.length, lastStep: r.cols.step[r.cols.step.length - 1] ?? null, dist: r.dist })),
    /** whether the Communication panel shows (some run is data-parallel) */
    communication: () => !document.getElementById('communication').hidden,
    servingSamples: () => (state.serving ? state.serving.cols.time.length : 0),
    charts: () => Object.fromEntries([...charts].filter(([, c]) => c.plot && !c.el.hidden).map(([id, c]) => [id, { displayed: c.displayed, series: c.series }])),
    renders: () => state.renders,
    /** main-thread time spent drawing (ms), for the overhead benchmark */
    renderStats: () => ({ renders: state.renders, renderMs: state.renderMs, events: state.events }),
  };
})();
