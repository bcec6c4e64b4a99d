/** ONNX export of tfjs students for the edge (onnxruntime-node): export, int8 quantization, inspection. */
export { OnnxExportError, OnnxFormatError } from './errors.js';
export { exportToOnnx, DEFAULT_OPSET, MAX_OPSET, BATCH_DIM, type ExportOptions } from './export.js';
export { inspectOnnx, type OnnxModelInfo, type OnnxTensorInfo } from './inspect.js';
export { quantizeInt8, quantizeSymmetric, DEFAULT_QUANT_FORM, DEFAULT_CONV_FORM, QUANT_FORMS, CONV_FORMS, type QuantForm, type ConvForm, type QuantizeOptions } from './quantize.js';
