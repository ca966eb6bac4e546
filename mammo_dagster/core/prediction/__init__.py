"""Prediction on a CPU with ONNX Runtime (`onnx_model`), over files or drops
(`predict`), writing the study CSV (`store.studies`). Needs no torch."""
