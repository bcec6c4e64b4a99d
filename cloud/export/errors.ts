/**
 * Raised when a tfjs model (or an option) cannot be expressed faithfully in ONNX by this exporter.
 * We throw rather than approximate: a silently wrong student on a device is worse than a failed export.
 */
export class OnnxExportError extends Error {
  override readonly name = 'OnnxExportError';
  /** The offending tfjs layer's name and class, when the problem is a layer. */
  readonly layerName: string | undefined;
  readonly layerClass: string | undefined;

  constructor(message: string, layer?: { name: string; className: string }) {
    super(layer ? `layer "${layer.name}" (${layer.className}): ${message}` : message);
    this.layerName = layer?.name;
    this.layerClass = layer?.className;
  }
}

/** Raised when bytes handed to `inspectOnnx`/`quantizeInt8` are not a usable ONNX model. */
export class OnnxFormatError extends Error {
  override readonly name = 'OnnxFormatError';
}
