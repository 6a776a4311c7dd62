"""A trained model outside training: `saved` turns a run or checkpoint into an ONNX file that
carries its metadata; `runtime` runs such a file with numpy and onnxruntime alone."""
