// Stock over time, drawn by hand on a canvas: a stepped line with a soft fill, y ticks on
// round numbers, time labels along the bottom. Points are {t: ms, total: number|null}.

function niceStep(max, ticks) {
  const raw = max / ticks;
  const magnitude = 10 ** Math.floor(Math.log10(raw || 1));
  const residual = raw / magnitude;
  const step = residual > 5 ? 10 : residual > 2 ? 5 : residual > 1 ? 2 : 1;
  return Math.max(1, step * magnitude);
}

export function drawChart(canvas, points, { from, to, emptyText = "No history yet" }) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  const colour = (name) => style.getPropertyValue(name).trim();
  ctx.font = "12px system-ui, sans-serif";

  const known = points.filter((p) => p.total !== null && p.t >= from && p.t <= to);
  const pad = { left: 44, right: 14, top: 14, bottom: 26 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  if (!known.length) {
    ctx.fillStyle = colour("--muted");
    ctx.textAlign = "center";
    ctx.fillText(emptyText, width / 2, height / 2);
    return;
  }
  const maxValue = Math.max(1, ...known.map((p) => p.total));
  const step = niceStep(maxValue, 4);
  const top = Math.ceil((maxValue * 1.1) / step) * step;
  const x = (t) => pad.left + ((t - from) / (to - from)) * plotW;
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  // grid and y labels
  ctx.strokeStyle = colour("--line");
  ctx.fillStyle = colour("--muted");
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let v = 0; v <= top; v += step) {
    ctx.beginPath();
    ctx.moveTo(pad.left, Math.round(y(v)) + 0.5);
    ctx.lineTo(width - pad.right, Math.round(y(v)) + 0.5);
    ctx.stroke();
    ctx.fillText(String(v), pad.left - 8, y(v));
  }
  // time labels
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const withSeconds = to - from < 10 * 60 * 1000;
  const options = withSeconds ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
  const labels = Math.max(2, Math.min(6, Math.floor(plotW / (withSeconds ? 130 : 95))));
  for (let i = 0; i <= labels; i += 1) {
    const t = from + ((to - from) * i) / labels;
    const text = new Date(t).toLocaleTimeString([], options);
    ctx.textAlign = i === 0 ? "left" : i === labels ? "right" : "center";
    ctx.fillText(text, x(t), height - pad.bottom + 8);
  }

  // stepped line: a count holds until the next change, and up to now
  const path = new Path2D();
  known.forEach((p, i) => {
    if (i === 0) path.moveTo(x(p.t), y(p.total));
    else {
      path.lineTo(x(p.t), y(known[i - 1].total));
      path.lineTo(x(p.t), y(p.total));
    }
  });
  const last = known[known.length - 1];
  path.lineTo(x(to), y(last.total));

  const fill = new Path2D(path);
  fill.lineTo(x(to), y(0));
  fill.lineTo(x(known[0].t), y(0));
  fill.closePath();
  const gradient = ctx.createLinearGradient(0, pad.top, 0, pad.top + plotH);
  gradient.addColorStop(0, "rgba(76, 194, 255, 0.35)");
  gradient.addColorStop(1, "rgba(76, 194, 255, 0.02)");
  ctx.fillStyle = gradient;
  ctx.fill(fill);
  ctx.strokeStyle = colour("--accent");
  ctx.lineWidth = 2;
  ctx.stroke(path);

  // the current value
  ctx.fillStyle = colour("--accent");
  ctx.beginPath();
  ctx.arc(x(to) - 1, y(last.total), 4, 0, Math.PI * 2);
  ctx.fill();
  ctx.fillStyle = colour("--text");
  ctx.textAlign = "right";
  ctx.textBaseline = "bottom";
  ctx.fillText(String(last.total), x(to) - 8, y(last.total) - 6);
}
