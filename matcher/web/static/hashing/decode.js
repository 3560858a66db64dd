// Decode an image file into pixels for hashing, the way matcher/hashing/decode.py does, with
// the browser's own decoder (createImageBitmap in the worker):
//
// - EXIF orientation applied (imageOrientation "from-image"), as ImageOps.exif_transpose;
// - no colour management (colorSpaceConversion "none"): Python hashes the stored values;
// - alpha ignored: the colour channels as stored. A 2D canvas keeps colours premultiplied, so
//   where a picture has transparent pixels the file is decoded again with ImageDecoder
//   (premultiplyAlpha "none"), which hands back the stored colours;
// - the size Python hashes at: a JPEG is decoded by PIL at 1/2, 1/4 or 1/8 scale (draft mode,
//   the short side kept >= 384), here reduced by the same whole factor with a box average
//   after a full decode; other pictures whose short side is >= 1024 are box-reduced by
//   short // 512, as PIL's reduce. The same size means the same crop boxes as Python;
// - pictures above 150 megapixels are refused.

export const MAX_PIXELS = 150_000_000; // DEFAULT_MAX_PIXELS in decode.py
export const MAX_IMAGE_BYTES = 512 * 1024 * 1024; // MAX_IMAGE_FILE_BYTES in files.py
export const JPEG_DRAFT_MIN_SIDE = 384;
export const REDUCE_MIN_SIDE = 512;

/** An error for the person: `kind` is one of the worker's error kinds. */
export class DecodeError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

const HEIF_BRANDS = new Set(["heic", "heix", "hevc", "hevx", "heim", "heis", "hevm", "hevs"]);

/** What the first bytes of a file say it is: "jpeg", "png", "gif", "webp", "bmp", "tiff",
 * "heic", "avif", "video", or null. */
export function sniff(head) {
  const b = head;
  const ascii = (from, to) => String.fromCharCode(...b.subarray(from, to));
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  if (b.length >= 8 && b[0] === 0x89 && ascii(1, 4) === "PNG") return "png";
  if (b.length >= 6 && ascii(0, 4) === "GIF8") return "gif";
  if (b.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return "webp";
  if (b.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "AVI ") return "video";
  if (b.length >= 2 && ascii(0, 2) === "BM") return "bmp";
  if (b.length >= 4 && (ascii(0, 4) === "II*\0" || ascii(0, 4) === "MM\0*")) return "tiff";
  if (b.length >= 12 && ascii(4, 8) === "ftyp") {
    const brand = ascii(8, 12);
    if (HEIF_BRANDS.has(brand) || brand === "mif1" || brand === "msf1") {
      // mif1/msf1 are generic HEIF: look for an AVIF brand among the compatible ones.
      return ascii(8, Math.min(b.length, 64)).includes("avif") ? "avif" : "heic";
    }
    if (brand === "avif" || brand === "avis") return "avif";
    return "video"; // mp4, mov, 3gp, m4v...
  }
  if (b.length >= 4 && b[0] === 0x1a && b[1] === 0x45 && b[2] === 0xdf && b[3] === 0xa3) {
    return "video"; // Matroska, WebM
  }
  return null;
}

/** PIL's draft() scale for a JPEG of w x h decoded for hashing (1, 2, 4 or 8). */
export function jpegDraftScale(w, h) {
  const scale = Math.min(Math.floor(w / JPEG_DRAFT_MIN_SIDE), Math.floor(h / JPEG_DRAFT_MIN_SIDE));
  for (const s of [8, 4, 2]) if (scale >= s) return s;
  return 1;
}

/** Box-reduce RGBA pixels by a whole factor (sides rounded up, the last boxes partial), as
 * PIL's Image.reduce. */
export function reduceRGBA(data, w, h, f) {
  const ow = Math.ceil(w / f);
  const oh = Math.ceil(h / f);
  const out = new Uint8ClampedArray(ow * oh * 4);
  const acc = new Float64Array(ow * 3);
  const cnt = new Float64Array(ow);
  for (let oy = 0; oy < oh; oy++) {
    acc.fill(0);
    cnt.fill(0);
    const y1 = Math.min(h, (oy + 1) * f);
    for (let y = oy * f; y < y1; y++) {
      let p = y * w * 4;
      for (let x = 0; x < w; x++, p += 4) {
        const ox = (x / f) | 0;
        acc[ox * 3] += data[p];
        acc[ox * 3 + 1] += data[p + 1];
        acc[ox * 3 + 2] += data[p + 2];
        cnt[ox] += 1;
      }
    }
    let o = oy * ow * 4;
    for (let ox = 0; ox < ow; ox++, o += 4) {
      const n = cnt[ox];
      out[o] = Math.floor(acc[ox * 3] / n + 0.5);
      out[o + 1] = Math.floor(acc[ox * 3 + 1] / n + 0.5);
      out[o + 2] = Math.floor(acc[ox * 3 + 2] / n + 0.5);
      out[o + 3] = 255;
    }
  }
  return { data: out, width: ow, height: oh };
}

const HEIC_MESSAGE =
  "This photo is in the iPhone HEIC format, which this browser cannot open. " +
  "You can: choose the photo again from the Photos app using this page (the iPhone then " +
  "shares it as JPEG); or open it on the iPhone and share or export it as JPEG; or, for new " +
  'photos, set Settings > Camera > Formats to "Most Compatible".';

async function bitmapOf(blob, kind) {
  try {
    return await createImageBitmap(blob, {
      imageOrientation: "from-image",
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
  } catch {
    if (kind === "heic" || kind === "avif") throw new DecodeError("heic", HEIC_MESSAGE);
    if (kind === null || kind === "video") {
      throw new DecodeError(
        "unsupported",
        "This file is not a photo this page can read. Please choose a photo (JPEG, PNG, WebP or GIF).",
      );
    }
    throw new DecodeError("corrupt", "This photo could not be opened. The file may be damaged or incomplete.");
  }
}

// The stored colours of a picture with transparent pixels (see the note at the top), or null
// where this browser has no ImageDecoder or it fails.
async function unpremultiplied(blob, type, width, height) {
  if (typeof ImageDecoder === "undefined") return null;
  let decoder;
  let frame;
  try {
    decoder = new ImageDecoder({
      data: blob.stream(),
      type,
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
    });
    ({ image: frame } = await decoder.decode({ frameIndex: 0 }));
    if (frame.displayWidth !== width || frame.displayHeight !== height) return null;
    // In the frame's own layout: a conversion by copyTo goes through premultiplied colours.
    const format = frame.format;
    if (!["RGBA", "RGBX", "BGRA", "BGRX"].includes(format)) return null;
    const raw = new Uint8ClampedArray(frame.allocationSize());
    const [plane] = await frame.copyTo(raw);
    const rgba = new Uint8ClampedArray(width * height * 4);
    const swap = format.startsWith("BGR");
    for (let y = 0; y < height; y++) {
      let p = plane.offset + y * plane.stride;
      let o = y * width * 4;
      for (let x = 0; x < width; x++, p += 4, o += 4) {
        rgba[o] = raw[swap ? p + 2 : p];
        rgba[o + 1] = raw[p + 1];
        rgba[o + 2] = raw[swap ? p : p + 2];
        rgba[o + 3] = 255;
      }
    }
    return rgba;
  } catch {
    return null;
  } finally {
    if (frame) frame.close();
    if (decoder) decoder.close();
  }
}

// JPEG files that end early decode in a browser with the missing part grey, where PIL refuses
// them: a JPEG must hold its end marker (FF D9) near its end (some cameras append data).
async function jpegLooksComplete(blob) {
  const tail = new Uint8Array(await blob.slice(Math.max(0, blob.size - 65536)).arrayBuffer());
  for (let i = tail.length - 2; i >= 0; i--) if (tail[i] === 0xff && tail[i + 1] === 0xd9) return true;
  return false;
}

/**
 * Decode an image file for hashing: `{data (RGBA bytes), width, height, channels: 4, kind}`,
 * or throw a DecodeError. `kind` is what sniff() found.
 */
export async function decodeForHashing(blob, { maxPixels = MAX_PIXELS } = {}) {
  const kind = sniff(new Uint8Array(await blob.slice(0, 64).arrayBuffer()));
  if (blob.size > MAX_IMAGE_BYTES) {
    throw new DecodeError("too_large", "This photo is too big to open here (over 512 MB).");
  }
  if (kind === "jpeg" && !(await jpegLooksComplete(blob))) {
    throw new DecodeError("corrupt", "This photo could not be opened. The file may be damaged or incomplete.");
  }
  const bitmap = await bitmapOf(blob, kind);
  let { width, height } = bitmap;
  if (width * height > maxPixels) {
    bitmap.close();
    throw new DecodeError("too_large", "This photo has too many pixels to open here.");
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  let data = ctx.getImageData(0, 0, width, height, { colorSpace: "srgb" }).data;
  canvas.width = canvas.height = 1; // let the canvas memory go
  let transparent = false;
  for (let i = 3; i < data.length; i += 4) {
    if (data[i] !== 255) {
      transparent = true;
      break;
    }
  }
  if (transparent) {
    const type = blob.type || (kind ? `image/${kind}` : "");
    const stored = type ? await unpremultiplied(blob, type, width, height) : null;
    if (stored) data = stored;
  }
  if (kind === "jpeg") {
    const s = jpegDraftScale(width, height);
    if (s > 1) ({ data, width, height } = reduceRGBA(data, width, height, s));
  }
  const factor = Math.floor(Math.min(width, height) / REDUCE_MIN_SIDE);
  if (factor >= 2) ({ data, width, height } = reduceRGBA(data, width, height, factor));
  return { data, width, height, channels: 4, kind };
}
