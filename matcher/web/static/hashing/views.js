// The `enroll` profile's views, as matcher/hashing/views.py makes them: the full picture, crops
// at several scales and offsets, small rotations (cut to their inner rectangle, and with the
// black corners a naive editor leaves), the 7 other quarter turns and flips, and crops of the
// picture mirrored left to right. Each view is
// hashed with PDQ; views below the quality floor are dropped, as in Python.
//
// Same geometry as Python, to the pixel: crop boxes use Python's round (half to even); rotations
// are Pillow's `Image.rotate(deg, BICUBIC, expand=False)` redone here (its affine matrix with
// `round(.., 15)`, the sample at each pixel's centre, its cubic with a = -1 and clamped edges,
// truncation to 0..255 per channel), so the same decoded pixels give the same hashes as Python
// (the Node tests check it view by view). What differs in a browser is only the decoder.

import { luma, pdqFromLuma } from "./pdq.js";

export const QUALITY_FLOOR = 50; // PDQ.quality_floor in matcher/signals.py

/** Python's round(): to the nearest integer, halves to the even one. */
export function pyRound(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Python's f"{x:g}" for the numbers of the profiles (6 significant digits, no trailing 0). */
export function fmtG(x) {
  return String(Number(x.toPrecision(6)));
}

function fmtSignedG(x) {
  return (x >= 0 ? "+" : "") + fmtG(x);
}

const grid = (scale, positions) => {
  const out = [];
  for (const y of positions) for (const x of positions) out.push([scale, x, y]);
  return out;
};
const offCentre = (scale, positions) =>
  grid(scale, positions).filter(([, x, y]) => !(x === 0.5 && y === 0.5));

const P5 = [0.0, 0.25, 0.5, 0.75, 1.0];
const P7 = [0.0, 1 / 6, 1 / 3, 0.5, 2 / 3, 5 / 6, 1.0];
const P3 = [0.0, 0.5, 1.0];
const P4 = [0.0, 1 / 3, 2 / 3, 1.0];
const INNER = [1 / 6, 0.5, 5 / 6]; // the inner 3x3 of P7
const CORNERS = [
  [0.0, 0.0],
  [1.0, 0.0],
  [0.0, 1.0],
  [1.0, 1.0],
];
// The middles of the 4 edges and the inner 2x2 of the 4x4 grid, as views.py's _EDGES, _P4_INNER.
const EDGES = [
  [0.5, 0.0],
  [0.0, 0.5],
  [1.0, 0.5],
  [0.5, 1.0],
];
const P4_INNER = [
  [1 / 3, 1 / 3],
  [2 / 3, 1 / 3],
  [1 / 3, 2 / 3],
  [2 / 3, 2 / 3],
];
const CENTRED = [0.975, 0.95, 0.925, 0.9, 0.875, 0.85, 0.825, 0.8, 0.775, 0.75, 0.725, 0.7].map(
  (s) => [s, 0.5, 0.5],
);
const HALVES = [...[0.0, 1.0].flatMap((y) => [0.0, 1.0].map((x) => [0.5, x, y])), [0.5, 0.5, 0.5]];
const ROTATIONS = [-5.0, -3.5, -2.5, -1.5, 1.5, 2.5, 3.5, 5.0];
const FILLED = [-5.0, -3.5, -2.0, 2.0, 3.5, 5.0];

/** The profiles of views.py (ENROLL is ENROLL_SHIPPED there). */
export const PROFILES = {
  enroll: {
    crops: [
      ...[0.975, 0.9, 0.8, 0.75, 0.7].map((s) => [s, 0.5, 0.5]),
      ...offCentre(0.875, INNER),
      ...offCentre(0.825, INNER),
      ...offCentre(0.8, INNER),
      ...offCentre(0.775, INNER),
      ...[0.9, 0.85, 0.8, 0.75].flatMap((s) => P4_INNER.map(([x, y]) => [s, x, y])),
      ...EDGES.map(([x, y]) => [0.875, x, y]),
      ...CORNERS.map(([x, y]) => [0.8, x, y]),
      ...HALVES,
    ],
    rotations: [-3.5, 3.5],
    filledRotations: [-5.0, -2.0, 2.0, 5.0],
    dihedral: true,
    mirroredCrops: [
      ...[0.9, 0.875, 0.85, 0.825].map((s) => [s, 0.5, 0.5]),
      ...[0.9, 0.875, 0.85, 0.825].flatMap((s) => CORNERS.map(([x, y]) => [s, x, y])),
    ],
  },
  "enroll-wide": {
    crops: [
      ...CENTRED,
      ...offCentre(0.95, P5),
      ...offCentre(0.9, P7),
      ...offCentre(0.85, P7),
      ...offCentre(0.8, P7),
      ...offCentre(0.75, P3),
      ...offCentre(0.7, P3),
      ...HALVES,
    ],
    rotations: ROTATIONS,
    filledRotations: FILLED,
    dihedral: true,
  },
  "enroll-compact": {
    crops: [
      ...CENTRED,
      ...offCentre(0.95, P3),
      ...offCentre(0.9, P4),
      ...offCentre(0.8, P4),
      ...offCentre(0.75, P3),
      ...offCentre(0.7, P3),
      ...HALVES,
    ],
    rotations: ROTATIONS,
    filledRotations: FILLED,
    dihedral: true,
  },
  "enroll-light": {
    crops: [...CENTRED, ...HALVES],
    rotations: ROTATIONS,
    filledRotations: FILLED,
    dihedral: true,
  },
};

export const DIHEDRAL = ["rot90", "rot180", "rot270", "flip_v", "flip_h", "transpose", "transverse"];

/** The names of the views of a profile, in order (before flat ones are dropped). */
export function viewNames(config) {
  return [
    "full",
    ...config.crops.map(([s, x, y]) => `crop${fmtG(s)}@${fmtG(x)},${fmtG(y)}`),
    ...config.rotations.map((d) => `rot${fmtSignedG(d)}`),
    ...(config.dihedral ? DIHEDRAL.map((n) => `dih/${n}`) : []),
    ...config.filledRotations.map((d) => `rotfill${fmtSignedG(d)}`),
    ...(config.mirroredCrops || []).map(([s, x, y]) => `mcrop${fmtG(s)}@${fmtG(x)},${fmtG(y)}`),
  ];
}

/** A picture: `{data, width, height, channels}` (RGBA ImageData bytes: channels 4; raw RGB: 3). */

/** views.py's _crop box (left, top, width, height) for a crop of `scale` at (x, y). */
export function cropBox(w, h, scale, x, y) {
  const cw = Math.max(1, pyRound(w * scale));
  const ch = Math.max(1, pyRound(h * scale));
  return [pyRound((w - cw) * x), pyRound((h - ch) * y), cw, ch];
}

// Luminance turned or flipped (PIL's Transpose, rotations counter-clockwise).
function transposeLuma(src, w, h, op) {
  const out = new Float32Array(w * h);
  const swap = op === "rot90" || op === "rot270" || op === "transpose" || op === "transverse";
  const ow = swap ? h : w;
  const oh = swap ? w : h;
  let o = 0;
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++, o++) {
      let sx;
      let sy;
      switch (op) {
        case "rot90":
          sy = x;
          sx = w - 1 - y;
          break;
        case "rot180":
          sy = h - 1 - y;
          sx = w - 1 - x;
          break;
        case "rot270":
          sy = h - 1 - x;
          sx = y;
          break;
        case "flip_v":
          sy = h - 1 - y;
          sx = x;
          break;
        case "flip_h":
          sy = y;
          sx = w - 1 - x;
          break;
        case "transpose":
          sy = x;
          sx = y;
          break;
        default: // transverse
          sy = h - 1 - x;
          sx = w - 1 - y;
      }
      out[o] = src[sy * w + sx];
    }
  }
  return { buf: out, rows: oh, cols: ow };
}

// Pillow's rotate matrix: output pixel centre (x + .5, y + .5) -> input point.
function rotateMatrix(w, h, degrees) {
  const r15 = (v) => Number(v.toFixed(15)); // Python's round(v, 15)
  const angle = -(degrees * (Math.PI / 180));
  const a = r15(Math.cos(angle));
  const b = r15(Math.sin(angle));
  const d = r15(-Math.sin(angle));
  const e = r15(Math.cos(angle));
  const cx = w / 2;
  const cy = h / 2;
  const c = a * -cx + b * -cy + 0.0 + cx;
  const f = d * -cx + e * -cy + 0.0 + cy;
  return [a, b, c, d, e, f];
}

// Pillow's cubic (a = -1) through four samples at fraction t past the second.
function cubic(v1, v2, v3, v4, t) {
  const p2 = -v1 + v3;
  const p3 = 2 * (v1 - v2) + v3 - v4;
  const p4 = -v1 + v2 - v3 + v4;
  return v2 + t * (p2 + t * (p3 + t * p4));
}

/**
 * Pillow's `rotate(degrees, BICUBIC, expand=False)` of an RGB(A) picture, only the output
 * rectangle (ox, oy, ow, oh) (the whole frame by default): RGB bytes, 3 a pixel, black where
 * the rotated picture does not reach.
 */
export function rotateRGB(img, degrees, ox = 0, oy = 0, ow = img.width, oh = img.height) {
  const { data, width: w, height: h, channels: ch } = img;
  const [a0, a1, a2, a3, a4, a5] = rotateMatrix(w, h, degrees);
  const out = new Uint8Array(ow * oh * 3);
  const stride = w * ch;
  const clampX = (x) => (x < 0 ? 0 : x < w ? x : w - 1) * ch;
  let o = 0;
  for (let y = oy; y < oy + oh; y++) {
    for (let x = ox; x < ox + ow; x++, o += 3) {
      let xin = a0 * (x + 0.5) + a1 * (y + 0.5) + a2;
      let yin = a3 * (x + 0.5) + a4 * (y + 0.5) + a5;
      if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) continue; // black (already 0)
      xin -= 0.5;
      yin -= 0.5;
      const fx = Math.floor(xin);
      const fy = Math.floor(yin);
      const dx = xin - fx;
      const dy = yin - fy;
      const c0 = clampX(fx - 1);
      const c1 = clampX(fx);
      const c2 = clampX(fx + 1);
      const c3 = clampX(fx + 2);
      // The first row is clamped; a later row outside the picture repeats the one before.
      const y0 = fy - 1;
      const r0 = (y0 < 0 ? 0 : y0 < h ? y0 : h - 1) * stride;
      const ok1 = fy >= 0 && fy < h;
      const ok2 = fy + 1 >= 0 && fy + 1 < h;
      const ok3 = fy + 2 >= 0 && fy + 2 < h;
      const r1 = fy * stride;
      const r2 = r1 + stride;
      const r3 = r2 + stride;
      for (let band = 0; band < 3; band++) {
        let r = r0 + band;
        const v1 = cubic(data[r + c0], data[r + c1], data[r + c2], data[r + c3], dx);
        let v2 = v1;
        if (ok1) {
          r = r1 + band;
          v2 = cubic(data[r + c0], data[r + c1], data[r + c2], data[r + c3], dx);
        }
        let v3 = v2;
        if (ok2) {
          r = r2 + band;
          v3 = cubic(data[r + c0], data[r + c1], data[r + c2], data[r + c3], dx);
        }
        let v4 = v3;
        if (ok3) {
          r = r3 + band;
          v4 = cubic(data[r + c0], data[r + c1], data[r + c2], data[r + c3], dx);
        }
        const v = cubic(v1, v2, v3, v4, dy);
        out[o + band] = v <= 0.0 ? 0 : v >= 255.0 ? 255 : Math.trunc(v);
      }
    }
  }
  return out;
}

// views.py's _rotate: the rotated picture cut to its largest centred rectangle of the same
// aspect with no black corner.
function innerBox(w, h, degrees) {
  const a = Math.abs(degrees) * (Math.PI / 180);
  const s = 1 / (Math.cos(a) + Math.max(w / h, h / w) * Math.sin(a));
  const cw = pyRound(w * s);
  const ch = pyRound(h * s);
  return [Math.floor((w - cw) / 2), Math.floor((h - ch) / 2), cw, ch];
}

/**
 * The views of a profile as tasks, in the order of `view_names` (Python's order):
 * `[{name, kind: "full"|"crop"|"rot"|"dih"|"rotfill"|"mcrop", arg}]`. Each can be hashed on its own
 * (`hashTask`), so a worker can spread them over several threads.
 */
export function viewTasks(config) {
  const names = viewNames(config);
  const args = [
    null,
    ...config.crops,
    ...config.rotations,
    ...(config.dihedral ? DIHEDRAL : []),
    ...config.filledRotations,
    ...(config.mirroredCrops || []),
  ];
  const kinds = [
    "full",
    ...config.crops.map(() => "crop"),
    ...config.rotations.map(() => "rot"),
    ...(config.dihedral ? DIHEDRAL.map(() => "dih") : []),
    ...config.filledRotations.map(() => "rotfill"),
    ...(config.mirroredCrops || []).map(() => "mcrop"),
  ];
  return names.map((name, i) => ({ name, kind: kinds[i], arg: args[i] }));
}

/** What hashing a picture's views needs once: its luminance and two scratch buffers. */
export function viewContext(img) {
  const { data, width: w, height: h, channels } = img;
  return {
    img,
    L: luma(data, channels, w, 0, 0, w, h),
    scratch: new Float32Array(w * h),
    work: new Float32Array(w * h),
  };
}

/** Does a view exist for a flat picture? Python leaves out the turns, flips and
 * black-cornered rotations of a picture whose full hash is below the floor. */
export function keptWhenFlat(task) {
  return task.kind !== "dih" && task.kind !== "rotfill";
}

/** The PDQ `{hex, quality}` of one view task of the picture of `ctx`. */
export function hashTask(ctx, task) {
  const { img, L, scratch, work } = ctx;
  const { width: w, height: h } = img;
  const region = (x, y, cw, ch) => {
    // A crop of the luminance is the luminance of the crop: no pixel is read twice.
    let o = 0;
    for (let r = y; r < y + ch; r++) {
      work.set(L.subarray(r * w + x, r * w + x + cw), o);
      o += cw;
    }
    return pdqFromLuma(work, ch, cw, scratch);
  };
  switch (task.kind) {
    case "full":
      return region(0, 0, w, h);
    case "crop": {
      const [scale, x, y] = task.arg;
      return region(...cropBox(w, h, scale, x, y));
    }
    case "rot": {
      const [bx, by, bw, bh] = innerBox(w, h, task.arg);
      const rgb = rotateRGB(img, task.arg, bx, by, bw, bh);
      return pdqFromLuma(luma(rgb, 3, bw, 0, 0, bw, bh, work), bh, bw, scratch);
    }
    case "dih": {
      const t = transposeLuma(L, w, h, task.arg);
      return pdqFromLuma(t.buf, t.rows, t.cols, scratch);
    }
    case "mcrop": {
      // views.py crops the picture mirrored left to right: the box is placed on the mirrored
      // picture, so its columns in the original run from w - left - cw, read right to left.
      const [scale, x, y] = task.arg;
      const [left, top, cw, ch] = cropBox(w, h, scale, x, y);
      const x0 = w - left - cw;
      let o = 0;
      for (let r = top; r < top + ch; r++) {
        const row = r * w + x0;
        for (let c = cw - 1; c >= 0; c--) work[o++] = L[row + c];
      }
      return pdqFromLuma(work, ch, cw, scratch);
    }
    case "rotfill": {
      const rgb = rotateRGB(img, task.arg);
      return pdqFromLuma(luma(rgb, 3, w, 0, 0, w, h, work), h, w, scratch);
    }
    default:
      throw new Error(`unknown view kind ${task.kind}`);
  }
}

/**
 * The views kept from hashed tasks (`hashes[i]` for `tasks[i]`, undefined where not hashed):
 * `[{name, hex, quality}]` in order, flat ones left out, as `enroll_views` returns them.
 */
export function keptViews(tasks, hashes) {
  const out = [];
  tasks.forEach((task, i) => {
    const h = hashes[i];
    if (h && h.quality >= QUALITY_FLOOR) out.push({ name: task.name, hex: h.hex, quality: h.quality });
  });
  return out;
}

/**
 * The enroll views of a picture: `[{name, hex, quality}]`, `full` first, flat views left out
 * (and, for a flat picture, no turns, flips or black-cornered rotations), as `enroll_views`.
 * One thread; `onView(done, total)` is told after each view.
 */
export function enrollViews(img, config = PROFILES.enroll, onView = null) {
  const tasks = viewTasks(config);
  const ctx = viewContext(img);
  const hashes = new Array(tasks.length);
  hashes[0] = hashTask(ctx, tasks[0]);
  const flat = hashes[0].quality < QUALITY_FLOOR;
  if (onView) onView(1, tasks.length);
  for (let i = 1; i < tasks.length; i++) {
    if (!flat || keptWhenFlat(tasks[i])) hashes[i] = hashTask(ctx, tasks[i]);
    if (onView) onView(i + 1, tasks.length);
  }
  return keptViews(tasks, hashes);
}

/** The plain profile: the full picture's PDQ only (kept whatever its quality: the caller
 * decides, as `matcher hash` does). */
export function plainView(img) {
  const { data, width: w, height: h, channels } = img;
  return [{ name: "full", ...pdqFromLuma(luma(data, channels, w, 0, 0, w, h), h, w) }];
}
