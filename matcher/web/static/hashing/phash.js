// pHash (imagehash.phash, as matcher/hashing/compute.py computes it), for the browser.
//
// The picture in grey (PIL's convert("L"): ITU-R 601-2 in 16-bit fixed point), resized to
// 32x32 with PIL's Lanczos resampling (a = 3, its support widened by the scale; coefficients
// normalised, then rounded to 22-bit fixed point; rows first, then columns; each pass rounded
// and clipped to 0..255), its 2-D DCT-II's top-left 8x8 coefficients, one bit per coefficient
// above their median. Pillow's integer steps are redone exactly, so the same pixels give the
// same 32x32 grey picture as Python; the DCT is in double, as numpy's.

const PRECISION_BITS = 22;
const N = 32;

/** PIL's RGB -> L of RGB(A) pixels: a Uint8Array of width x height. */
export function greyPIL(data, width, height, channels) {
  const out = new Uint8Array(width * height);
  for (let i = 0, p = 0; i < out.length; i++, p += channels) {
    out[i] = (data[p] * 19595 + data[p + 1] * 38470 + data[p + 2] * 7471 + 0x8000) >>> 16;
  }
  return out;
}

function sinc(x) {
  if (x === 0.0) return 1.0;
  const y = x * Math.PI;
  return Math.sin(y) / y;
}

function lanczos(x) {
  return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
}

// Pillow's precompute_coeffs and normalize_coeffs_8bpc for inSize -> outSize.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 3.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const inv = 1.0 / filterscale;
  const kk = new Int32Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let ww = 0.0;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const w = lanczos((x + xmin - center + 0.5) * inv);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { kk, bounds, ksize };
}

function clip8(ss) {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** PIL's resize((32, 32), LANCZOS) of a grey picture. */
export function resize32(grey, width, height) {
  const h = coefficients(width, N);
  const tmp = new Uint8Array(height * N);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let xx = 0; xx < N; xx++) {
      const xmin = h.bounds[xx * 2];
      const xmax = h.bounds[xx * 2 + 1];
      let ss = 1 << (PRECISION_BITS - 1);
      for (let x = 0; x < xmax; x++) ss += grey[row + x + xmin] * h.kk[xx * h.ksize + x];
      tmp[y * N + xx] = clip8(ss);
    }
  }
  const v = coefficients(height, N);
  const out = new Uint8Array(N * N);
  for (let yy = 0; yy < N; yy++) {
    const ymin = v.bounds[yy * 2];
    const ymax = v.bounds[yy * 2 + 1];
    for (let x = 0; x < N; x++) {
      let ss = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < ymax; y++) ss += tmp[(y + ymin) * N + x] * v.kk[yy * v.ksize + y];
      out[yy * N + x] = clip8(ss);
    }
  }
  return out;
}

const DCT = (() => {
  const d = new Float64Array(8 * N);
  for (let k = 0; k < 8; k++) {
    for (let n = 0; n < N; n++) d[k * N + n] = 2.0 * Math.cos((Math.PI * k * (2 * n + 1)) / (2 * N));
  }
  return d;
})();

/** pHash of RGB(A) pixels: 16 lower-case hex digits. */
export function phash(data, width, height, channels = 4) {
  const p = resize32(greyPIL(data, width, height, channels), width, height);
  const t = new Float64Array(8 * N); // DCT of the columns: 8 x 32
  for (let k = 0; k < 8; k++) {
    for (let x = 0; x < N; x++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += DCT[k * N + n] * p[n * N + x];
      t[k * N + x] = s;
    }
  }
  const c = new Float64Array(64);
  let biggest = 0;
  for (let i = 0; i < 8; i++) {
    for (let j = 0; j < 8; j++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += t[i * N + n] * DCT[j * N + n];
      c[i * 8 + j] = s;
      biggest = Math.max(biggest, Math.abs(s));
    }
  }
  // Rounding noise where symmetry cancels a coefficient is set to zero, as compute.py does.
  const noise = 1e-12 * Math.max(biggest, 1.0);
  for (let i = 0; i < 64; i++) if (Math.abs(c[i]) < noise) c[i] = 0.0;
  const sorted = Float64Array.from(c).sort();
  const median = (sorted[31] + sorted[32]) / 2;
  let hex = "";
  for (let i = 0; i < 64; i += 4) {
    let nibble = 0;
    for (let b = 0; b < 4; b++) nibble = (nibble << 1) | (c[i + b] > median ? 1 : 0);
    hex += nibble.toString(16);
  }
  return hex;
}
