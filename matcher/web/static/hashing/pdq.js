// PDQ, Meta's 256-bit perceptual hash, written here for the browser (and Node, for the tests).
//
// It follows the reference C++ (ThreatExchange pdq/cpp, as bound by the Python `pdqhash`
// package that matcher/hashing uses) step by step, in the same single-precision arithmetic, so
// that the same pixels give the same bits as the Python library:
//
//   luminance  Y = 0.299 R + 0.587 G + 0.114 B, worked out in double and stored as float32
//              (what `pdqhash.compute` does with numpy before calling the C++);
//   blur       a Jarosz filter: two passes of a box filter along rows then columns, each box
//              (cols + 127) / 128 (rows + 127) / 128 pixels wide, with partial windows at the
//              ends averaged over the pixels they hold;
//   decimate   64x64 samples at the centres of a 64x64 grid;
//   quality    the sum of the 64x64 grid's neighbour steps (in percent of 255), / 90, at most 100;
//   DCT        rows 1..16 of a 64-point DCT-II both ways (the DC row is left out): 16x16;
//   bits       one bit per coefficient above their median (the 128th smallest of 256).
//
// Every float32 operation of the reference is one double operation rounded to float32 here
// (Math.fround, or a store into a Float32Array): for + - * / that gives the float32 result
// exactly, so nothing drifts but what the C++ compiler could reorder (nothing, at -O2).

const MIN_HASHABLE_DIM = 5;
const fr = Math.fround;

// The 16x64 DCT matrix: a float32 scale times a double cosine, stored as float32.
const DCT = (() => {
  const d = new Float32Array(16 * 64);
  const scale = fr(Math.sqrt(2.0 / 64));
  for (let i = 0; i < 16; i++) {
    for (let j = 0; j < 64; j++) {
      d[i * 64 + j] = scale * Math.cos((Math.PI / 2.0 / 64) * (i + 1) * (2 * j + 1));
    }
  }
  return d;
})();

/** Box-filter window for a side of `oldDim` pixels going down to `newDim` (the reference's
 * integer formula). */
export function jaroszWindow(oldDim, newDim = 64) {
  return Math.floor((oldDim + 2 * newDim - 1) / (2 * newDim));
}

/**
 * Luminance of RGB(A) pixels as float32, row-major. `data` holds `channels` bytes a pixel
 * (4 for canvas ImageData, 3 for raw RGB) with rows `stride` pixels apart; the rectangle
 * (x, y, w, h) is read (a crop costs nothing more than its own pixels).
 */
export function luma(data, channels, stride, x = 0, y = 0, w = stride, h = -1, out = null) {
  if (h < 0) h = Math.floor(data.length / channels / stride) - y;
  const buf = out && out.length >= w * h ? out : new Float32Array(w * h);
  let o = 0;
  for (let r = 0; r < h; r++) {
    let p = ((y + r) * stride + x) * channels;
    for (let c = 0; c < w; c++, p += channels) {
      buf[o++] = data[p] * 0.299 + data[p + 1] * 0.587 + data[p + 2] * 0.114;
    }
  }
  return buf;
}

// One box pass along each row of `src` (rows x cols) into `dst`: the reference's box1DFloat
// (phases: accumulate, grow, slide, shrink), the running sum kept in float32.
function boxRows(src, dst, rows, cols, win) {
  const half = Math.floor((win + 2) / 2);
  const p1 = half - 1;
  const p2 = win - half + 1;
  const p3 = cols - win;
  const p4 = half - 1;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let li = base;
    let ri = base;
    let oi = base;
    let sum = 0;
    let n = 0;
    for (let i = 0; i < p1; i++) {
      sum = fr(sum + src[ri++]);
      n++;
    }
    for (let i = 0; i < p2; i++) {
      sum = fr(sum + src[ri++]);
      n++;
      dst[oi++] = sum / n;
    }
    for (let i = 0; i < p3; i++) {
      sum = fr(sum + src[ri++]);
      sum = fr(sum - src[li++]);
      dst[oi++] = sum / n;
    }
    for (let i = 0; i < p4; i++) {
      sum = fr(sum - src[li++]);
      n--;
      dst[oi++] = sum / n;
    }
  }
}

// The same box along each column, swept row by row (one running float32 sum per column, in
// `sums`): the same operations in the same order per column as the reference, cache-friendly.
function boxCols(src, dst, rows, cols, win, sums) {
  const half = Math.floor((win + 2) / 2);
  const p1 = half - 1;
  const p2 = win - half + 1;
  const p3 = rows - win;
  const p4 = half - 1;
  sums.fill(0, 0, cols);
  let ri = 0; // row read (added)
  let li = 0; // row left (subtracted)
  let oi = 0; // row written
  let n = 0;
  for (let i = 0; i < p1; i++, ri++) {
    const b = ri * cols;
    for (let c = 0; c < cols; c++) sums[c] += src[b + c];
    n++;
  }
  for (let i = 0; i < p2; i++, ri++, oi++) {
    const b = ri * cols;
    const o = oi * cols;
    n++;
    for (let c = 0; c < cols; c++) {
      sums[c] += src[b + c];
      dst[o + c] = sums[c] / n;
    }
  }
  for (let i = 0; i < p3; i++, ri++, li++, oi++) {
    const b = ri * cols;
    const l = li * cols;
    const o = oi * cols;
    for (let c = 0; c < cols; c++) {
      sums[c] += src[b + c];
      sums[c] -= src[l + c];
      dst[o + c] = sums[c] / n;
    }
  }
  for (let i = 0; i < p4; i++, li++, oi++) {
    const l = li * cols;
    const o = oi * cols;
    n--;
    for (let c = 0; c < cols; c++) {
      sums[c] -= src[l + c];
      dst[o + c] = sums[c] / n;
    }
  }
}

// The last two passes, computed only where the 64x64 decimation reads: the third (along rows)
// at the 64 sampled columns of every row, the fourth (along columns) at the 64 sampled rows of
// those columns. Same arithmetic as the full passes at those points, a fraction of the work.
function lastPasses(src, rows, cols, winRows, winCols, colIdx, rowIdx, out64) {
  const third = new Float32Array(rows * 64);
  const half = Math.floor((winRows + 2) / 2);
  // Output column oi is the running sum after adding index oi + half - 1 (and, once the
  // window is full, subtracting oi - (win - half) - 1), divided by the pixels it holds.
  const lastNeeded = colIdx[63];
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let sum = 0;
    let k = 0; // next sampled column to write
    let added = 0;
    let removed = 0;
    for (let oi = 0; oi <= lastNeeded; oi++) {
      // Bring the window to [oi - (win - half), oi + half - 1] clipped to the row.
      const hi = Math.min(cols - 1, oi + half - 1);
      while (added <= hi) {
        sum = fr(sum + src[base + added]);
        added++;
      }
      // In the reference a sliding step adds, then subtracts: the same order here.
      const lo = Math.max(0, oi - (winRows - half));
      while (removed < lo) {
        sum = fr(sum - src[base + removed]);
        removed++;
      }
      if (oi === colIdx[k]) {
        const n = added - removed;
        const v = fr(sum / n);
        while (k < 64 && colIdx[k] === oi) third[r * 64 + k++] = v;
      }
    }
  }
  // Fourth pass: along each of the 64 columns of `third`, sampled at rowIdx.
  const halfC = Math.floor((winCols + 2) / 2);
  for (let k = 0; k < 64; k++) {
    let sum = 0;
    let added = 0;
    let removed = 0;
    let m = 0;
    const total = rowIdx[63] + 1;
    for (let oi = 0; oi < total; oi++) {
      const hi = Math.min(rows - 1, oi + halfC - 1);
      while (added <= hi) {
        sum = fr(sum + third[added * 64 + k]);
        added++;
      }
      const lo = Math.max(0, oi - (winCols - halfC));
      while (removed < lo) {
        sum = fr(sum - third[removed * 64 + k]);
        removed++;
      }
      if (oi === rowIdx[m]) {
        const v = fr(sum / (added - removed));
        while (m < 64 && rowIdx[m] === oi) out64[m++ * 64 + k] = v;
      }
    }
  }
}

function sampleIndex(n) {
  const idx = new Int32Array(64);
  for (let i = 0; i < 64; i++) idx[i] = Math.trunc(((i + 0.5) * n) / 64);
  return idx;
}

/** The 64x64 blurred and decimated luminance of a rows x cols float32 picture (which is
 * overwritten). */
export function downsample64(buf, rows, cols, scratch = null) {
  const out = new Float32Array(64 * 64);
  if (rows === 64 && cols === 64) {
    out.set(buf.subarray(0, 64 * 64));
    return out;
  }
  const n = rows * cols;
  const tmp = scratch && scratch.length >= n ? scratch : new Float32Array(n);
  const sums = new Float32Array(cols);
  const winRows = jaroszWindow(cols); // the box along each row spans this many columns
  const winCols = jaroszWindow(rows);
  boxRows(buf, tmp, rows, cols, winRows);
  boxCols(tmp, buf, rows, cols, winCols, sums);
  lastPasses(buf, rows, cols, winRows, winCols, sampleIndex(cols), sampleIndex(rows), out);
  return out;
}

/** PDQ quality (0-100) of a 64x64 grid: its neighbour steps, as the reference counts them. */
export function quality64(a) {
  let sum = 0;
  for (let i = 0; i < 63; i++) {
    for (let j = 0; j < 64; j++) {
      sum += Math.abs(Math.trunc(fr(fr(fr(a[i * 64 + j] - a[(i + 1) * 64 + j]) * 100) / 255)));
    }
  }
  for (let i = 0; i < 64; i++) {
    for (let j = 0; j < 63; j++) {
      sum += Math.abs(Math.trunc(fr(fr(fr(a[i * 64 + j] - a[i * 64 + j + 1]) * 100) / 255)));
    }
  }
  return Math.min(100, Math.trunc(sum / 90));
}

/** The 16x16 DCT coefficients (float32, row-major) of a 64x64 grid. */
export function dct16(a) {
  const t = new Float32Array(16 * 64);
  for (let i = 0; i < 16; i++) {
    for (let j = 0; j < 64; j++) {
      let s = 0;
      for (let k = 0; k < 64; k++) s = fr(s + fr(DCT[i * 64 + k] * a[k * 64 + j]));
      t[i * 64 + j] = s;
    }
  }
  const b = new Float32Array(256);
  for (let i = 0; i < 16; i++) {
    for (let j = 0; j < 16; j++) {
      let s = 0;
      for (let k = 0; k < 64; k++) s = fr(s + fr(t[i * 64 + k] * DCT[j * 64 + k]));
      b[i * 16 + j] = s;
    }
  }
  return b;
}

const HEX = "0123456789abcdef";

/** 64 lower-case hex digits of the bits of 16x16 coefficients above their median, in the
 * reference's order (bit i*16+j; word 15 first, each word's bit 15 first). */
export function bitsHex(b) {
  const sorted = Float32Array.from(b).sort();
  const median = sorted[127];
  let hex = "";
  for (let i = 15; i >= 0; i--) {
    let word = 0;
    for (let j = 0; j < 16; j++) if (b[i * 16 + j] > median) word |= 1 << j;
    for (let s = 12; s >= 0; s -= 4) hex += HEX[(word >> s) & 15];
  }
  return hex;
}

const ZERO = "0".repeat(64);

/**
 * PDQ of a rows x cols float32 luminance buffer (overwritten: pass a copy to keep it):
 * `{hex, quality}`. Pictures under 5 pixels a side hash to zero with quality 0, as in the
 * reference.
 */
export function pdqFromLuma(buf, rows, cols, scratch = null) {
  if (rows < MIN_HASHABLE_DIM || cols < MIN_HASHABLE_DIM) return { hex: ZERO, quality: 0 };
  const grid = downsample64(buf, rows, cols, scratch);
  return { hex: bitsHex(dct16(grid)), quality: quality64(grid) };
}

/** PDQ of RGB(A) pixels (`channels` bytes each, `width` x `height`): `{hex, quality}`. */
export function pdq(data, width, height, channels = 4) {
  return pdqFromLuma(luma(data, channels, width, 0, 0, width, height), height, width);
}

/** Hamming distance between two 64-digit hex hashes. */
export function distance(a, b) {
  let d = 0;
  for (let i = 0; i < 64; i += 8) {
    let x = (parseInt(a.slice(i, i + 8), 16) ^ parseInt(b.slice(i, i + 8), 16)) >>> 0;
    while (x) {
      x &= x - 1;
      d++;
    }
  }
  return d;
}
