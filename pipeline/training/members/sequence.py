"""The sequence member: a one-hidden-layer MLP over the stream's last K feature vectors (input ``window``
float32 [N, K, 28], oldest first, edge-padded before a stream's first vector: stages.windows on the host,
datasets.History.windows in training).

Why an MLP on the flattened window rather than a 1-D convolution or a GRU: with K = 16 and 28 features the window is
448 numbers, which a 32-unit hidden layer takes in ~14k weights; it can weight each lag of each feature freely (a
convolution would tie the lags), scikit-learn fits it in seconds on one thread, and the graph is a handful of nodes
checked against scikit-learn's own probabilities. The features are standardised per feature (the same constants at
every lag; price levels zeroed, as every member does). The penalty is chosen on validation log loss.

Graph: window -> Reshape [N, K*28] -> MatMul/Add/Relu -> MatMul/Add -> Sigmoid -> prob_up [N], the
standardisation folded into the first layer's weights (mlp.folded). model.json records ``window`` (K), which the
host reads to build the input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from pipeline.training.datasets import Dataset
from pipeline.training.members import mlp
from pipeline.training.members.base import OUTPUT, FittedMember
from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES

DEFAULT_WINDOW = 16
DEFAULT_FIT_STRIDE = 10


def require_history(ds: Dataset, what: str) -> None:
    if ds.history is None:
        raise ValueError(f"the {what} member needs the feature records behind the rows (a dataset from seeds, "
                         "Parquet or a journal), not labelled rows alone")


@dataclass(frozen=True)
class SequenceTrainer:
    window: int = DEFAULT_WINDOW
    hidden: int = mlp.DEFAULT_HIDDEN
    fit_stride: int = DEFAULT_FIT_STRIDE
    name: str = "sequence"
    member_kind: str = "sequence"

    def feeds(self, ds: Dataset) -> dict[str, np.ndarray]:
        require_history(ds, self.name)
        return {"window": ds.history.windows(ds.position, self.window)}

    def fit(self, train: Dataset, validation: Dataset, seed: int) -> FittedMember:
        require_history(train, self.name)
        k = self.window
        fit_rows = np.arange(0, len(train), self.fit_stride)
        w_train = train.history.windows(train.position[fit_rows], k)
        mean, inv = mlp.scaling(w_train)

        def flat(w: np.ndarray) -> np.ndarray:
            return ((w.astype(np.float64) - mean) * inv).reshape(len(w), k * N_FEATURES)

        clf, table = mlp.fit(flat(w_train), train.y[fit_rows], flat(self.feeds(validation)["window"]),
                             validation.y, seed, hidden=self.hidden)
        nodes = [helper.make_node("Reshape", ["window", "flat_shape"], ["flat"])]
        inits = [numpy_helper.from_array(np.array([-1, k * N_FEATURES], np.int64), "flat_shape")]
        head, head_inits = mlp.head_nodes(clf, "flat", first=mlp.folded(clf.coefs_[0], clf.intercepts_[0],
                                                                         np.tile(mean, k), np.tile(inv, k)))
        props = {"feature_schema_hash": str(FEATURE_SCHEMA_HASH), "feature_names": ",".join(FEATURE_NAMES),
                 "horizon": str(train.horizon), "window": str(k)}
        onnx_bytes = mlp.finish_model(nodes + head, inits + head_inits, [helper.make_tensor_value_info(
            "window", TensorProto.FLOAT, ["N", k, N_FEATURES])], self.name, props)
        metadata = {
            "kind": "mlp_over_window", "member_kind": "sequence", "window": k,
            "input": {"name": "window", "dtype": "float32", "shape": ["N", k, N_FEATURES]}, "output": OUTPUT,
            "opset": mlp.OPSET, "ir_version": mlp.IR_VERSION,
            "fit": {"fit_stride": self.fit_stride, "fitted_rows": int(fit_rows.size), "library": "scikit-learn "
                    "MLPClassifier (adam, relu), one BLAS thread",
                    "selection": {"criterion": "lowest validation log loss; first in grid order on a tie",
                                  "candidates": table}},
        }
        return FittedMember(onnx_bytes, metadata, lambda feeds: mlp.probabilities(clf, flat(feeds["window"])),
                            self.feeds)
