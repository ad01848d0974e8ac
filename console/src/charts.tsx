// Two small hand-written SVG charts for the overview (no chart library: the first load
// stays small): stacked bars of counts per bucket, and lines of values per bucket with
// gaps where there is no value. Both scale to their container's width (viewBox).

/** One stacked series: its name, colour class and a value per bucket. */
export interface Series {
  name: string;
  cls: string;
  values: (number | null)[];
}

const W = 480;
const H = 200;
const PAD = { l: 40, r: 6, t: 10, b: 24 };

/** A round upper bound for an axis, and its four gridlines. */
function axis(max: number): number[] {
  if (max <= 0) return [0, 1];
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  return [0, 1, 2, 3, 4].map((i) => i * step);
}

function fmt(n: number): string {
  return n >= 10000 ? (n / 1000).toFixed(0) + "k" : n >= 1000 ? (n / 1000).toFixed(1) + "k" : String(Math.round(n * 10) / 10);
}

function Frame(props: { ticks: number[]; labels: string[]; unit?: string; children: any; title: string }) {
  const top = props.ticks[props.ticks.length - 1];
  const y = (v: number) => PAD.t + (H - PAD.t - PAD.b) * (1 - v / top);
  const n = props.labels.length;
  const bw = (W - PAD.l - PAD.r) / Math.max(n, 1);
  const every = n > 12 ? 3 : 1;
  return (
    <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={props.title}>
      {props.ticks.map((v) => (
        <g>
          <line x1={PAD.l} x2={W - PAD.r} y1={y(v)} y2={y(v)} class="grid" />
          <text x={PAD.l - 6} y={y(v) + 4} class="tick" text-anchor="end">
            {fmt(v)}
            {props.unit ?? ""}
          </text>
        </g>
      ))}
      {props.labels.map((l, i) =>
        i % every === 0 ? (
          <text x={PAD.l + bw * i + bw / 2} y={H - 6} class="tick" text-anchor="middle">
            {l}
          </text>
        ) : null,
      )}
      {props.children}
    </svg>
  );
}

/** Bars per bucket, each stacked from the series (a <title> on each part says what). */
export function StackedBars(props: { labels: string[]; series: Series[]; title: string }) {
  const n = props.labels.length;
  const totals = props.labels.map((_, i) => props.series.reduce((s, x) => s + (x.values[i] ?? 0), 0));
  const ticks = axis(Math.max(0, ...totals));
  const top = ticks[ticks.length - 1];
  const inner = H - PAD.t - PAD.b;
  const bw = (W - PAD.l - PAD.r) / Math.max(n, 1);
  const bars = [];
  for (let i = 0; i < n; i++) {
    let acc = 0;
    for (const s of props.series) {
      const v = s.values[i] ?? 0;
      if (v <= 0) continue;
      const h = (inner * v) / top;
      const y = PAD.t + inner * (1 - acc / top) - h;
      acc += v;
      bars.push(
        <rect x={PAD.l + bw * i + bw * 0.15} width={bw * 0.7} y={y} height={h} class={s.cls}>
          <title>{`${props.labels[i]} ${s.name}: ${v}`}</title>
        </rect>,
      );
    }
  }
  return (
    <Frame ticks={ticks} labels={props.labels} title={props.title}>
      {bars}
    </Frame>
  );
}

/** Lines per series; a bucket without a value breaks the line. */
export function Lines(props: { labels: string[]; series: Series[]; unit?: string; title: string }) {
  const n = props.labels.length;
  const all = props.series.flatMap((s) => s.values.filter((v): v is number => v !== null && v !== undefined));
  const ticks = axis(Math.max(0, ...all));
  const top = ticks[ticks.length - 1];
  const inner = H - PAD.t - PAD.b;
  const bw = (W - PAD.l - PAD.r) / Math.max(n, 1);
  const x = (i: number) => PAD.l + bw * i + bw / 2;
  const y = (v: number) => PAD.t + inner * (1 - v / top);
  return (
    <Frame ticks={ticks} labels={props.labels} unit={props.unit} title={props.title}>
      {props.series.map((s) => {
        let d = "";
        let pen = false;
        const dots = [];
        for (let i = 0; i < n; i++) {
          const v = s.values[i];
          if (v === null || v === undefined) {
            pen = false;
            continue;
          }
          d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
          pen = true;
          dots.push(
            <circle cx={x(i)} cy={y(v)} r={2.5} class={s.cls}>
              <title>{`${props.labels[i]} ${s.name}: ${v}${props.unit ?? ""}`}</title>
            </circle>,
          );
        }
        return (
          <g>
            <path d={d} class={"line " + s.cls} />
            {dots}
          </g>
        );
      })}
    </Frame>
  );
}

/** The colour key of a chart. */
export function Legend(props: { series: { name: string; cls: string }[] }) {
  return (
    <div class="legend">
      {props.series.map((s) => (
        <span>
          <i class={"swatch " + s.cls} />
          {s.name}
        </span>
      ))}
    </div>
  );
}
