"""scikit-learn's estimator check suite over every public memory."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from ttrlearn import (
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    RLSMemory,
)

ESTIMATORS = [
    LinearAttentionMemory(),
    LinearAttentionMemory(feature_map="elu+1", normalize=True, decay=0.99),
    RLSMemory(),
    RLSMemory(forgetting_factor=0.99, ridge_mode="fixed"),
    KernelRegressionMemory(),
    KernelRegressionMemory(kernel="gaussian", order=1, max_memory=50),
    GatedDeltaMemory(),
    GatedDeltaMemory(step="implicit", decay=0.95),
]

_WEIGHT_NOT_REPETITION = (
    "the delta rule's sample_weight scales the learning rate of one step; a "
    "step of size 2b is not two steps of size b, so weighting is not repetition"
)
_FORGETTING = (
    "under forgetting, a pair repeated twice is written at two times with "
    "different decays, so integer weights are not repetitions"
)


def _expected_failed_checks(est):
    params = est.get_params()
    if isinstance(est, GatedDeltaMemory):
        return {"check_sample_weight_equivalence_on_dense_data": _WEIGHT_NOT_REPETITION}
    if params.get("decay", 1.0) != 1.0 or params.get("forgetting_factor", 1.0) != 1.0:
        return {"check_sample_weight_equivalence_on_dense_data": _FORGETTING}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)
