"""NIST StRD nonlinear-regression reference data: starting points and certified results.

Public-domain values from the NIST Statistical Reference Datasets
(https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml), quoted to all published digits:
``start_1`` and ``start_2`` are NIST's "Start 1" (far) and "Start 2" (near) vectors,
``certified`` the certified parameter estimates and ``residual_sum_of_squares`` the certified
residual sum of squares.  Parameters are in NIST's order ``b1, b2, ...``.

Every entry here is checked against the S2MPJ residuals (see ``s2mpj.py`` and
``tests/external/test_problem_loaders.py``): the Gauss-Newton step from ``certified`` is
negligible relative to the parameters (least-squares stationarity), the residual sum of
squares reproduces ``residual_sum_of_squares`` (to 1e-10 relative; not for LANCZOS1, whose
certified sum 1.4e-25 is below what parameters rounded to 11 digits can reproduce), and
``start_1`` equals S2MPJ's own start.  Roszman1 is absent: S2MPJ's model of it differs from
NIST's, so it could not be verified.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NistCertified:
    """Reference data of one NIST StRD nonlinear least-squares dataset."""

    start_1: tuple[float, ...]
    start_2: tuple[float, ...]
    certified: tuple[float, ...]
    residual_sum_of_squares: float


_LANCZOS_START_1 = (1.2, 0.3, 5.6, 5.5, 6.5, 7.6)
_LANCZOS_START_2 = (0.5, 0.7, 3.6, 4.2, 4.0, 6.3)
_CHWIRUT_START_1 = (0.1, 0.01, 0.02)
_CHWIRUT_START_2 = (0.15, 0.008, 0.010)

NIST_CERTIFIED: dict[str, NistCertified] = {
    # Lower level of difficulty.
    "MISRA1A": NistCertified(
        (500.0, 1e-4), (250.0, 5e-4),
        (2.3894212918e02, 5.5015643181e-04),
        1.2455138894e-01,
    ),
    "CHWIRUT2": NistCertified(
        _CHWIRUT_START_1, _CHWIRUT_START_2,
        (1.6657666537e-01, 5.1653291286e-03, 1.2150007096e-02),
        5.1304802941e02,
    ),
    "CHWIRUT1": NistCertified(
        _CHWIRUT_START_1, _CHWIRUT_START_2,
        (1.9027818370e-01, 6.1314004477e-03, 1.0530908399e-02),
        2.3844771393e03,
    ),
    "LANCZOS3": NistCertified(
        _LANCZOS_START_1, _LANCZOS_START_2,
        (8.6816414977e-02, 9.5498101505e-01, 8.4400777463e-01,
         2.9515951832e00, 1.5825685901e00, 4.9863565084e00),
        1.6117193594e-08,
    ),
    "GAUSS1": NistCertified(
        (97.0, 0.009, 100.0, 65.0, 20.0, 70.0, 178.0, 16.5),
        (94.0, 0.0105, 99.0, 63.0, 25.0, 71.0, 180.0, 20.0),
        (9.8778210871e01, 1.0497276517e-02, 1.0048990633e02, 6.7481111276e01,
         2.3129773360e01, 7.1994503004e01, 1.7899805021e02, 1.8389389025e01),
        1.3158222432e03,
    ),
    "GAUSS2": NistCertified(
        (96.0, 0.009, 103.0, 106.0, 18.0, 72.0, 151.0, 18.0),
        (98.0, 0.0105, 103.0, 105.0, 20.0, 73.0, 150.0, 20.0),
        (9.9018328406e01, 1.0994945399e-02, 1.0188022528e02, 1.0703095519e02,
         2.3578584029e01, 7.2045589471e01, 1.5327010194e02, 1.9525972636e01),
        1.2475282092e03,
    ),
    "DANWOOD": NistCertified(
        (1.0, 5.0), (0.7, 4.0),
        (7.6886226176e-01, 3.8604055871e00),
        4.3173084083e-03,
    ),
    "MISRA1B": NistCertified(
        (500.0, 1e-4), (300.0, 2e-4),
        (3.3799746163e02, 3.9039091287e-04),
        7.5464681533e-02,
    ),
    # Average level of difficulty.
    "KIRBY2": NistCertified(
        (2.0, -0.1, 0.003, -0.001, 1e-5),
        (1.5, -0.15, 0.0025, -0.0015, 2e-5),
        (1.6745063063e00, -1.3927397867e-01, 2.5961181191e-03,
         -1.7241811870e-03, 2.1664802578e-05),
        3.9050739624e00,
    ),
    "HAHN1": NistCertified(
        (10.0, -1.0, 0.05, -1e-5, -0.05, 0.001, -1e-6),
        (1.0, -0.1, 0.005, -1e-6, -0.005, 1e-4, -1e-7),
        (1.0776351733e00, -1.2269296921e-01, 4.0863750610e-03, -1.4262662514e-06,
         -5.7609940901e-03, 2.4053735503e-04, -1.2314450199e-07),
        1.5324382854e00,
    ),
    "NELSON": NistCertified(
        (2.0, 1e-4, -0.01), (2.5, 5e-9, -0.05),
        (2.5906836021e00, 5.6177717026e-09, -5.7701013174e-02),
        3.7976833176e00,
    ),
    "MGH17": NistCertified(
        (50.0, 150.0, -100.0, 1.0, 2.0), (0.5, 1.5, -1.0, 0.01, 0.02),
        (3.7541005211e-01, 1.9358469127e00, -1.4646871366e00,
         1.2867534640e-02, 2.2122699662e-02),
        5.4648946975e-05,
    ),
    "LANCZOS1": NistCertified(
        _LANCZOS_START_1, _LANCZOS_START_2,
        (9.5100000027e-02, 1.0000000001e00, 8.6070000013e-01,
         3.0000000002e00, 1.5575999998e00, 5.0000000001e00),
        1.4307867721e-25,
    ),
    "LANCZOS2": NistCertified(
        _LANCZOS_START_1, _LANCZOS_START_2,
        (9.6251029939e-02, 1.0057332849e00, 8.6424689056e-01,
         3.0078283915e00, 1.5529016879e00, 5.0028798100e00),
        2.2299428125e-11,
    ),
    "GAUSS3": NistCertified(
        (94.9, 0.009, 90.1, 113.0, 20.0, 73.8, 140.0, 20.0),
        (96.0, 0.0096, 80.0, 110.0, 25.0, 74.0, 139.0, 25.0),
        (9.8940368970e01, 1.0945879335e-02, 1.0069553078e02, 1.1163619459e02,
         2.3300500029e01, 7.3705031418e01, 1.4776164251e02, 1.9668221230e01),
        1.2444846360e03,
    ),
    "MISRA1C": NistCertified(
        (500.0, 1e-4), (600.0, 2e-4),
        (6.3642725809e02, 2.0813627256e-04),
        4.0966836971e-02,
    ),
    "MISRA1D": NistCertified(
        (500.0, 1e-4), (450.0, 3e-4),
        (4.3736970754e02, 3.0227324449e-04),
        5.6419295283e-02,
    ),
    "ENSO": NistCertified(
        (11.0, 3.0, 0.5, 40.0, -0.7, -1.3, 25.0, -0.3, 1.4),
        (10.0, 3.0, 0.5, 44.0, -1.5, 0.5, 26.0, -0.1, 1.5),
        (1.0510749193e01, 3.0762128085e00, 5.3280138227e-01, 4.4311088700e01,
         -1.6231428586e00, 5.2554493756e-01, 2.6887614440e01, 2.1232288488e-01,
         1.4966870418e00),
        7.8853978668e02,
    ),
    # Higher level of difficulty.
    "MGH09": NistCertified(
        (25.0, 39.0, 41.5, 39.0), (0.25, 0.39, 0.415, 0.39),
        (1.9280693458e-01, 1.9128232873e-01, 1.2305650693e-01, 1.3606233068e-01),
        3.0750560385e-04,
    ),
    "THURBER": NistCertified(
        (1000.0, 1000.0, 400.0, 40.0, 0.7, 0.3, 0.03),
        (1300.0, 1500.0, 500.0, 75.0, 1.0, 0.4, 0.05),
        (1.2881396800e03, 1.4910792535e03, 5.8323836877e02, 7.5416644291e01,
         9.6629502864e-01, 3.9797285797e-01, 4.9727297349e-02),
        5.6427082397e03,
    ),
    "BOXBOD": NistCertified(
        (1.0, 1.0), (100.0, 0.75),
        (2.1380940889e02, 5.4723748542e-01),
        1.1680088766e03,
    ),
    "RAT42": NistCertified(
        (100.0, 1.0, 0.1), (75.0, 2.5, 0.07),
        (7.2462237576e01, 2.6180768402e00, 6.7359200066e-02),
        8.0565229338e00,
    ),
    "MGH10": NistCertified(
        (2.0, 400000.0, 25000.0), (0.02, 4000.0, 250.0),
        (5.6096364710e-03, 6.1813463463e03, 3.4522363462e02),
        8.7945855171e01,
    ),
    "ECKERLE4": NistCertified(
        (1.0, 10.0, 500.0), (1.5, 5.0, 450.0),
        (1.5543827178e00, 4.0888321754e00, 4.5154121844e02),
        1.4635887487e-03,
    ),
    "RAT43": NistCertified(
        (100.0, 10.0, 1.0, 1.0), (700.0, 5.0, 0.75, 1.3),
        (6.9964151270e02, 5.2771253025e00, 7.5962938329e-01, 1.2792483859e00),
        8.7864049080e03,
    ),
    "BENNETT5": NistCertified(
        (-2000.0, 50.0, 0.8), (-1500.0, 45.0, 0.85),
        (-2.5235058043e03, 4.6736564644e01, 9.3218483193e-01),
        5.2404744073e-04,
    ),
}
"""Reference data by upper-case NIST dataset name."""
