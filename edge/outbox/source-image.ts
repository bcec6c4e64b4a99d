import { ImageError, inspectImage, loadSharp } from '../../shared/image/preprocess.js';
import type { Logger } from '../../shared/log/index.js';
import type { SourceImage } from '../../shared/protocol/index.js';

/**
 * The source image a hard example carries (issue 11): for an image model, the PNG or JPEG the local
 * API received, re-encoded on the device (EXIF orientation applied, metadata dropped, same format:
 * PNG stays lossless, JPEG at `jpegQuality`), so the teacher can preprocess it its own way in the next
 * round. Bounded: an image whose re-encoding exceeds `maxBytes` is omitted (the example goes without
 * it) and counted, as is one that fails to re-encode. Never throws: the example matters more.
 */
export interface SourceImageStats {
  attached: number;
  /** Re-encoded but over `maxBytes`: omitted. */
  tooLarge: number;
  /** Could not be read or re-encoded: omitted. */
  failed: number;
}

export interface SourceImageOptions {
  /** Largest re-encoded image attached, in bytes; 0 disables source images. */
  maxBytes: number;
  /** Largest width × height decoded (the API's own bound). */
  maxPixels: number;
  jpegQuality?: number;
  log: Logger;
}

export class SourceImages {
  private readonly s: SourceImageStats = { attached: 0, tooLarge: 0, failed: 0 };

  constructor(private readonly o: SourceImageOptions) {}

  get enabled(): boolean {
    return this.o.maxBytes > 0;
  }

  stats(): SourceImageStats {
    return { ...this.s };
  }

  /** The re-encoded image, or undefined (disabled, too large, unreadable: counted and logged). */
  async encode(bytes: Uint8Array): Promise<SourceImage | undefined> {
    if (!this.enabled) return undefined;
    let out: { format: SourceImage['format']; data: Buffer };
    try {
      out = await reencode(bytes, this.o.maxPixels, this.o.jpegQuality ?? 85);
    } catch (err) {
      this.s.failed++;
      this.o.log.info({ reason: err instanceof ImageError ? err.code : (err as Error).message.slice(0, 200) }, 'edge/outbox source image not re-encoded');
      return undefined;
    }
    if (out.data.byteLength > this.o.maxBytes) {
      this.s.tooLarge++;
      this.o.log.debug({ bytes: out.data.byteLength, maxBytes: this.o.maxBytes }, 'edge/outbox source image over the bound, omitted');
      return undefined;
    }
    this.s.attached++;
    return { format: out.format, data: out.data.toString('base64') };
  }
}

/** PNG → PNG (max compression), JPEG → JPEG; orientation applied, metadata not kept. Throws on a bad image. */
export async function reencode(bytes: Uint8Array, maxPixels: number, jpegQuality: number): Promise<{ format: SourceImage['format']; data: Buffer }> {
  const header = await inspectImage(bytes, { maxPixels });
  const sharp = await loadSharp();
  const pipe = sharp(bytes, { failOn: 'warning', limitInputPixels: maxPixels }).autoOrient();
  const data = header.format === 'png' ? await pipe.png({ compressionLevel: 9 }).toBuffer() : await pipe.jpeg({ quality: jpegQuality, mozjpeg: true }).toBuffer();
  return { format: header.format, data };
}
