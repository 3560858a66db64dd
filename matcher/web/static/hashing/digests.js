// MD5 and SHA-256 of a file, streamed: the file is read in chunks (Blob.slice), so a video of
// gigabytes never sits in memory at once. Written here because crypto.subtle.digest takes the
// whole input in one buffer and has no MD5. Both follow their RFCs (1321, FIPS 180-4); the
// tests compare them with Python's hashlib on many lengths around the 64-byte block.

export const CHUNK = 4 * 1024 * 1024;

const HEX = "0123456789abcdef";

function toHex(bytes) {
  let s = "";
  for (const b of bytes) s += HEX[b >> 4] + HEX[b & 15];
  return s;
}

// A 64-byte block hasher with the buffering and padding both digests share.
class BlockHash {
  constructor(bigEndianLength) {
    this.block = new Uint8Array(64);
    this.view = new DataView(this.block.buffer);
    this.fill = 0;
    this.length = 0; // bytes, as a double: exact up to 2^53
    this.bigEndian = bigEndianLength;
  }

  update(bytes) {
    let i = 0;
    const n = bytes.length;
    this.length += n;
    if (this.fill > 0) {
      const take = Math.min(64 - this.fill, n);
      this.block.set(bytes.subarray(0, take), this.fill);
      this.fill += take;
      i = take;
      if (this.fill < 64) return this;
      this.compress(this.view, 0);
      this.fill = 0;
    }
    if (n - i >= 64) {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (; i + 64 <= n; i += 64) this.compress(view, i);
    }
    if (i < n) {
      this.block.set(bytes.subarray(i), 0);
      this.fill = n - i;
    }
    return this;
  }

  finish() {
    const bits = this.length * 8;
    const hi = Math.floor(bits / 4294967296);
    const lo = bits >>> 0;
    const pad = new Uint8Array((this.fill < 56 ? 56 : 120) - this.fill + 8);
    pad[0] = 0x80;
    const tail = new DataView(pad.buffer, pad.length - 8);
    if (this.bigEndian) {
      tail.setUint32(0, hi);
      tail.setUint32(4, lo);
    } else {
      tail.setUint32(0, lo, true);
      tail.setUint32(4, hi, true);
    }
    const length = this.length;
    this.update(pad);
    this.length = length;
    return this.digest();
  }
}

// MD5 (RFC 1321): per-round shifts and the sine table.
const MD5_S = [
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14,
  20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6,
  10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];
const MD5_K = Int32Array.from({ length: 64 }, (_, i) =>
  Math.floor(Math.abs(Math.sin(i + 1)) * 4294967296),
);

export class MD5 extends BlockHash {
  constructor() {
    super(false);
    this.h = Int32Array.of(0x67452301, 0xefcdab89 | 0, 0x98badcfe | 0, 0x10325476);
    this.m = new Int32Array(16);
  }

  compress(view, at) {
    const m = this.m;
    for (let i = 0; i < 16; i++) m[i] = view.getInt32(at + 4 * i, true);
    let [a, b, c, d] = this.h;
    for (let i = 0; i < 64; i++) {
      let f;
      let g;
      if (i < 16) {
        f = (b & c) | (~b & d);
        g = i;
      } else if (i < 32) {
        f = (d & b) | (~d & c);
        g = (5 * i + 1) & 15;
      } else if (i < 48) {
        f = b ^ c ^ d;
        g = (3 * i + 5) & 15;
      } else {
        f = c ^ (b | ~d);
        g = (7 * i) & 15;
      }
      const t = d;
      d = c;
      c = b;
      const x = (a + f + MD5_K[i] + m[g]) | 0;
      b = (b + ((x << MD5_S[i]) | (x >>> (32 - MD5_S[i])))) | 0;
      a = t;
    }
    const h = this.h;
    h[0] = (h[0] + a) | 0;
    h[1] = (h[1] + b) | 0;
    h[2] = (h[2] + c) | 0;
    h[3] = (h[3] + d) | 0;
  }

  digest() {
    const out = new Uint8Array(16);
    const v = new DataView(out.buffer);
    for (let i = 0; i < 4; i++) v.setInt32(4 * i, this.h[i], true);
    return toHex(out);
  }
}

// SHA-256 (FIPS 180-4): the first 32 bits of the fractional parts of the cube roots of the
// first 64 primes.
const SHA_K = Int32Array.of(
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
);

export class SHA256 extends BlockHash {
  constructor() {
    super(true);
    this.h = Int32Array.of(
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    );
    this.w = new Int32Array(64);
  }

  compress(view, at) {
    const w = this.w;
    for (let i = 0; i < 16; i++) w[i] = view.getInt32(at + 4 * i, false);
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15];
      const y = w[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let [a, b, c, d, e, f, g, h] = this.h;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (h + S1 + ch + SHA_K[i] + w[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    const H = this.h;
    H[0] = (H[0] + a) | 0;
    H[1] = (H[1] + b) | 0;
    H[2] = (H[2] + c) | 0;
    H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0;
    H[5] = (H[5] + f) | 0;
    H[6] = (H[6] + g) | 0;
    H[7] = (H[7] + h) | 0;
  }

  digest() {
    const out = new Uint8Array(32);
    const v = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) v.setInt32(4 * i, this.h[i], false);
    return toHex(out);
  }
}

/**
 * MD5 and SHA-256 of a Blob (a File), read `chunk` bytes at a time: `{md5, sha256}` in
 * lower-case hex. `onChunk(doneBytes, totalBytes)` is told after each chunk.
 */
export async function blobDigests(blob, { chunk = CHUNK, onChunk = null } = {}) {
  const md5 = new MD5();
  const sha = new SHA256();
  for (let at = 0; at < blob.size; at += chunk) {
    const bytes = new Uint8Array(await blob.slice(at, at + chunk).arrayBuffer());
    md5.update(bytes);
    sha.update(bytes);
    if (onChunk) onChunk(Math.min(blob.size, at + chunk), blob.size);
  }
  return { md5: md5.finish(), sha256: sha.finish() };
}

/** MD5 and SHA-256 of bytes already in memory (a Uint8Array). */
export function bytesDigests(bytes) {
  return { md5: new MD5().update(bytes).finish(), sha256: new SHA256().update(bytes).finish() };
}
