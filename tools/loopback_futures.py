"""The loopback Binance's USDⓈ-M futures order endpoints (``/fapi``): one-way positions from fills, a USDT wallet,
the dead-man's switch, and the futures user-data stream, for the live venue gateway's tests. Signing, the time
window, matching and the faults are ``tools.loopback_orders``'s (see its docstring for the fault names); this
module is what futures does differently.

Endpoints (signed unless said; the venue's JSON and codes):

- ``POST /fapi/v1/order``: LIMIT (GTC, IOC, FOK, GTX) and MARKET, ``reduceOnly``; one-way mode only
  (``positionSide`` BOTH). Refusals: -4116 "ClientOrderId is duplicated." (an open order has that id), -2019
  "Margin is insufficient.", -5021 a FOK that cannot fill in full, -5022 a GTX (post-only) that would take,
  -2022 "ReduceOnly Order is rejected.".
- ``PUT /fapi/v1/order`` (ccxt's ``edit_order``): price and quantity of an open LIMIT order, same order id, back
  of the queue; a quantity at or below what is filled, or a GTX price that would take, cancels the order (the
  venue's rules); crossing prices take at once; -5027 when nothing changes.
- ``DELETE /fapi/v1/order``, ``GET /fapi/v1/order``, ``GET /fapi/v1/openOrder`` (by ``orderId`` or
  ``origClientOrderId``), ``GET /fapi/v1/openOrders``, ``DELETE /fapi/v1/allOpenOrders`` (answers code 200 even
  when there was nothing to cancel, as the venue does), ``GET /fapi/v1/userTrades`` (``realizedPnl`` per fill).
- ``GET /fapi/v3/account`` and ``/fapi/v2/account`` (ccxt's ``fetch_balance``), ``GET /fapi/v3/positionRisk``
  and ``/fapi/v2/positionRisk`` (``fetch_positions``), ``GET /fapi/v1/leverageBracket`` (ccxt loads it first).
- ``POST /fapi/v1/countdownCancelAll`` (``symbol``, ``countdownTime`` ms): the dead-man's switch. Each call
  replaces the symbol's countdown; 0 disables it; when one elapses every open order of the symbol is cancelled
  (CANCELED on the user stream).
- ``POST/PUT/DELETE /fapi/v1/listenKey`` (the API key only; the account's one key while it is active) and the
  stream on ``/private/ws?listenKey=<key>`` (what ccxt.pro uses) or ``/ws/<key>``: ``ORDER_TRADE_UPDATE`` for
  every order change (NEW, TRADE, AMENDMENT, CANCELED, EXPIRED) and ``ACCOUNT_UPDATE`` (the wallet and the
  symbol's position) after every fill, in the venue's fields.

Model: the wallet (``balance``, USDT) takes each fill's fee (``fee_rate`` of the notional) and realized PnL; a
position is a signed quantity and an average entry price, closing and flipping as the venue does in one-way
mode. No margin model beyond one check: an order that opens exposure needs its notional / ``leverage`` within
the available balance (wallet minus the margin of positions at entry and of open orders). Unrealized PnL and
the mark price come from the replayed book's mid, for reporting only.
"""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from aiohttp import web

from tools.loopback_orders import EPS, Fill, Matching, Order, SignedRoutes, VenueError, _worst

FAPI = "/fapi/v1"
MAINT_RATIO = 0.004  # BTCUSDT's first bracket: enough for ccxt's maintenance margin figures


def _num(x: float) -> str:
    return f"{x:.8f}".rstrip("0").rstrip(".") if x else "0"


@dataclass
class Position:
    qty: float = 0.0          # signed: > 0 long, < 0 short
    entry: float = 0.0
    realized: float = 0.0
    updated_ms: int = 0


class FuturesAccount(Matching):
    duplicate = (400, -4116, "ClientOrderId is duplicated.")
    would_take = (400, -5022, "Due to the order could not be executed as maker, the Post Only order will be rejected.")
    fok_unfillable = (400, -5021, "Due to the order could not be filled immediately, the FOK order has been "
                                  "rejected.")

    def __init__(self, balance: float, instruments: dict[str, dict], fee_rate: float = 0.0005,
                 leverage: int = 20):
        super().__init__(instruments, fee_rate)
        self.wallet = float(balance)
        self.leverage = leverage
        self.positions = {s: Position() for s in instruments}

    def position_margin(self) -> float:
        return sum(abs(p.qty) * p.entry for p in self.positions.values()) / self.leverage

    def order_margin(self, symbol: str | None = None) -> float:
        return sum(o.left * o.price for o in self.open_orders(symbol)) / self.leverage

    def available(self) -> float:
        return self.wallet - self.position_margin() - self.order_margin()

    def check_funds(self, symbol, side, kind, price, qty, levels, reduce_only) -> None:
        pos = self.positions[symbol]
        reducing = pos.qty != 0 and (side == "SELL") == (pos.qty > 0)
        if reduce_only:
            if not reducing or qty > abs(pos.qty) + EPS:
                raise VenueError(400, -2022, "ReduceOnly Order is rejected.")
            return
        opening = qty - (abs(pos.qty) if reducing else 0.0)
        px = price if kind != "MARKET" else _worst(levels, qty)
        if opening > EPS and opening * px / self.leverage > self.available() + EPS:
            raise VenueError(400, -2019, "Margin is insufficient.")

    def settle(self, order: Order, price: float, qty: float, fee: float) -> float:
        pos = self.positions[order.symbol]
        signed = qty if order.side == "BUY" else -qty
        realized = 0.0
        if pos.qty == 0 or (pos.qty > 0) == (signed > 0):
            new = pos.qty + signed
            pos.entry = (abs(pos.qty) * pos.entry + qty * price) / abs(new)
        else:
            closing = min(qty, abs(pos.qty))
            realized = closing * (price - pos.entry) * (1.0 if pos.qty > 0 else -1.0)
            new = pos.qty + signed
            if abs(new) <= EPS:
                new, pos.entry = 0.0, 0.0
            elif (new > 0) != (pos.qty > 0):
                pos.entry = price  # flipped: what is left opened at this price
        pos.qty = new
        pos.realized += realized
        pos.updated_ms = order.updated_ms
        self.wallet += realized - fee
        return realized


def futures_order_json(o: Order) -> dict:
    return {"orderId": o.order_id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_id,
            "price": _num(o.price), "avgPrice": _num(o.avg_price), "origQty": _num(o.qty),
            "executedQty": _num(o.executed), "cumQty": _num(o.executed), "cumQuote": _num(o.quote_done),
            "timeInForce": o.tif or "GTC", "type": o.kind, "reduceOnly": o.reduce_only, "closePosition": False,
            "side": o.side, "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False, "origType": o.kind, "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0, "time": o.created_ms,
            "updateTime": o.updated_ms or o.created_ms}


def futures_fill_json(f: Fill) -> dict:
    return {"symbol": f.symbol, "id": f.trade_id, "orderId": f.order_id, "side": f.side, "price": _num(f.price),
            "qty": _num(f.qty), "realizedPnl": _num(f.realized_pnl), "quoteQty": _num(f.price * f.qty),
            "commission": _num(f.fee), "commissionAsset": f.fee_asset, "time": f.time_ms, "positionSide": "BOTH",
            "buyer": f.side == "BUY", "maker": f.maker}


class FuturesRoutes(SignedRoutes):
    """USDⓈ-M's signed order endpoints over ``server`` (a LoopbackServer replaying a usdm capture)."""

    prefix = FAPI
    listen_key_path = f"{FAPI}/listenKey"
    time_in_force = ("GTC", "IOC", "FOK", "GTX")

    def __init__(self, server, instruments: dict[str, dict], api_key: str, secret: str, balance: float = 10_000.0,
                 leverage: int = 20, fee_rate: float = 0.0005):
        """``balance``: the USDT wallet; ``leverage``: every symbol's (the margin check's divisor)."""
        super().__init__(server, FuturesAccount(balance, instruments, fee_rate, leverage), api_key, secret)
        self.asset = next(iter(instruments.values()))["quote"]
        self.countdowns: dict[str, asyncio.TimerHandle] = {}
        self.counts.update(countdowns_fired=0, countdown_cancels=0)
        self._listen_key_value: str | None = None

    def add_to(self, app: web.Application) -> None:
        p = FAPI
        app.router.add_post(f"{p}/order", self._guard(self._new_order))
        app.router.add_put(f"{p}/order", self._guard(self._modify))
        app.router.add_delete(f"{p}/order", self._guard(self._cancel))
        app.router.add_get(f"{p}/order", self._guard(self._query))
        app.router.add_get(f"{p}/openOrder", self._guard(self._open_order))
        app.router.add_get(f"{p}/openOrders", self._guard(self._open_orders))
        app.router.add_delete(f"{p}/allOpenOrders", self._guard(self._cancel_all))
        app.router.add_get(f"{p}/userTrades", self._guard(self._user_trades))
        app.router.add_get(f"{p}/leverageBracket", self._guard(self._leverage_bracket))
        app.router.add_post(f"{p}/countdownCancelAll", self._guard(self._countdown))
        for version in ("v2", "v3"):
            app.router.add_get(f"/fapi/{version}/account", self._guard(self._account))
            app.router.add_get(f"/fapi/{version}/positionRisk", self._guard(self._position_risk(version)))
        for method in ("POST", "PUT", "DELETE"):
            app.router.add_route(method, self.listen_key_path, self._listen_key)

    def _new_listen_key(self) -> str:
        # the venue hands out the account's active key again (and extends it) rather than a second one
        if self._listen_key_value is None:
            self._listen_key_value = secrets.token_urlsafe(48)
        return self._listen_key_value

    # --- prices ---------------------------------------------------------------------------------------

    def mark(self, symbol: str) -> float:
        book = self.server.books[symbol]
        if book.bids and book.asks:
            return (max(book.bids) + min(book.asks)) / 2
        return 0.0

    def _unrealized(self, symbol: str) -> float:
        pos = self.account.positions[symbol]
        return pos.qty * (self.mark(symbol) - pos.entry) if pos.qty else 0.0

    # --- user data ------------------------------------------------------------------------------------

    def _on_change(self, order: Order, exec_type: str, fill: Fill | None, now_ms: int) -> None:
        o = {"s": order.symbol, "c": order.client_id, "S": order.side, "o": order.kind, "f": order.tif or "GTC",
             "q": _num(order.qty), "p": _num(order.price), "ap": _num(order.avg_price), "sp": "0", "x": exec_type,
             "X": order.status, "i": order.order_id, "l": _num(fill.qty) if fill else "0",
             "z": _num(order.executed), "L": _num(fill.price) if fill else "0", "T": now_ms,
             "t": fill.trade_id if fill else 0, "b": "0", "a": "0", "m": bool(fill and fill.maker),
             "R": order.reduce_only, "wt": "CONTRACT_PRICE", "ot": order.kind, "ps": "BOTH", "cp": False,
             "rp": _num(fill.realized_pnl) if fill else "0", "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER",
             "pm": "NONE", "gtd": 0}
        if fill:  # the venue sends the commission only with a fill
            o["N"], o["n"] = fill.fee_asset, _num(fill.fee)
        self.send_user(exec_type, {"e": "ORDER_TRADE_UPDATE", "E": now_ms, "T": now_ms, "o": o})
        if fill:
            self.send_user("ACCOUNT", self._account_update(order.symbol, now_ms))

    def _account_update(self, symbol: str, now_ms: int) -> dict:
        pos = self.account.positions[symbol]
        wallet = _num(self.account.wallet)
        return {"e": "ACCOUNT_UPDATE", "E": now_ms, "T": now_ms, "a": {
            "m": "ORDER", "B": [{"a": self.asset, "wb": wallet, "cw": wallet, "bc": "0"}],
            "P": [{"s": symbol, "pa": _num(pos.qty), "ep": _num(pos.entry), "bep": _num(pos.entry),
                   "cr": _num(pos.realized), "up": _num(self._unrealized(symbol)), "mt": "cross", "iw": "0",
                   "ps": "BOTH", "ma": self.asset}]}}

    # --- orders ---------------------------------------------------------------------------------------

    def _new_order(self, params: dict) -> dict:
        symbol, side, kind, tif, price, qty = self._order_params(params, ("LIMIT", "MARKET"))
        if params.get("positionSide", "BOTH") != "BOTH":
            raise VenueError(400, -4061, "Order's position side does not match user's setting.")
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        order = self._place(symbol, side, kind, tif, price, qty, self._client_id(params), reduce_only)
        return futures_order_json(order)

    def _modify(self, params: dict) -> dict:
        order = self._find(params, VenueError(400, -2013, "Order does not exist."))
        if not order.open:
            raise VenueError(400, -2013, "Order does not exist.")
        if params.get("side") != order.side:
            raise VenueError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        try:
            qty, price = float(params["quantity"]), float(params["price"])
        except (KeyError, ValueError):
            raise VenueError(400, -1102, "Mandatory parameter 'quantity' or 'price' was not sent, was empty/null, "
                                         "or malformed.") from None
        if not (qty > 0 and price > 0):
            raise VenueError(400, -1013, "Invalid quantity or price.")
        if abs(qty - order.qty) <= EPS and abs(price - order.price) <= EPS:
            raise VenueError(400, -5027, "No need to modify the order.")
        self.account.amend(self.server.books[order.symbol], order, price, qty, self.server.venue_now_ms())
        self.counts["amends"] += 1
        return futures_order_json(order)

    def _cancel(self, params: dict) -> dict:
        order = self._find(params, VenueError(400, -2011, "Unknown order sent."))
        if not order.open:
            raise VenueError(400, -2011, "Unknown order sent.")
        self.account.end(order, "CANCELED", self.server.venue_now_ms())
        self.counts["cancels"] += 1
        return futures_order_json(order)

    def _cancel_all(self, params: dict) -> dict:
        self._cancel_symbol(self._symbol(params))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _cancel_symbol(self, symbol: str) -> int:
        now = self.server.venue_now_ms()
        orders = sorted(self.account.open_orders(symbol), key=lambda o: o.order_id)
        for order in orders:
            self.account.end(order, "CANCELED", now)
        self.counts["cancels"] += len(orders)
        return len(orders)

    def _query(self, params: dict) -> dict:
        order = self._find(params, VenueError(400, -2013, "Order does not exist."))
        self.counts["queries"] += 1
        return futures_order_json(order)

    def _open_order(self, params: dict) -> dict:
        order = self._find(params, VenueError(400, -2013, "Order does not exist."))
        if not order.open:
            raise VenueError(400, -2013, "Order does not exist.")
        return futures_order_json(order)

    def _open_orders(self, params: dict) -> list:
        symbol = params.get("symbol")
        if symbol is not None:
            self._symbol(params)
        return [futures_order_json(o) for o in self.account.open_orders(symbol)]

    def _user_trades(self, params: dict) -> list:
        symbol = self._symbol(params)
        order_id = params.get("orderId")
        out = [futures_fill_json(t) for t in self.account.trades
               if t.symbol == symbol and (order_id is None or str(t.order_id) == order_id)]
        limit = int(params.get("limit", 500))
        return out[-limit:]

    # --- the dead-man's switch ------------------------------------------------------------------------

    def _countdown(self, params: dict) -> dict:
        symbol = self._symbol(params)
        try:
            ms = int(params["countdownTime"])
        except (KeyError, ValueError):
            raise VenueError(400, -1102, "Mandatory parameter 'countdownTime' was not sent, was empty/null, or "
                                         "malformed.") from None
        old = self.countdowns.pop(symbol, None)
        if old is not None:
            old.cancel()  # each call replaces the countdown: the heartbeat that keeps orders alive
        if ms > 0:
            self.countdowns[symbol] = asyncio.get_running_loop().call_later(ms / 1000.0, self._countdown_fire,
                                                                            symbol)
        return {"symbol": symbol, "countdownTime": str(ms)}

    def _countdown_fire(self, symbol: str) -> None:
        self.countdowns.pop(symbol, None)
        self.counts["countdowns_fired"] += 1
        self.counts["countdown_cancels"] += self._cancel_symbol(symbol)

    # --- account --------------------------------------------------------------------------------------

    def _leverage_bracket(self, params: dict) -> list:
        symbols = [self._symbol(params)] if "symbol" in params else sorted(self.account.instruments)
        return [{"symbol": s, "notionalCoef": 1.0, "brackets": [
            {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0,
             "maintMarginRatio": MAINT_RATIO, "cum": 0.0},
            {"bracket": 2, "initialLeverage": 100, "notionalCap": 600000, "notionalFloor": 50000,
             "maintMarginRatio": 0.005, "cum": 50.0}]} for s in symbols]

    def _position_numbers(self, symbol: str) -> dict:
        pos = self.account.positions[symbol]
        mark = self.mark(symbol)
        notional = pos.qty * mark
        upnl = self._unrealized(symbol)
        lev = self.account.leverage
        orders = self.account.open_orders(symbol)
        bid = sum(o.left * o.price for o in orders if o.side == "BUY")
        ask = sum(o.left * o.price for o in orders if o.side == "SELL")
        return {"symbol": symbol, "positionSide": "BOTH", "positionAmt": _num(pos.qty),
                "entryPrice": _num(pos.entry), "breakEvenPrice": _num(pos.entry), "markPrice": _num(mark),
                "unRealizedProfit": _num(upnl), "unrealizedProfit": _num(upnl), "liquidationPrice": "0",
                "isolatedMargin": "0", "notional": _num(notional), "marginAsset": self.asset,
                "isolatedWallet": "0", "initialMargin": _num(abs(notional) / lev + (bid + ask) / lev),
                "maintMargin": _num(abs(notional) * MAINT_RATIO),
                "positionInitialMargin": _num(abs(notional) / lev), "openOrderInitialMargin": _num((bid + ask) / lev),
                "adl": 0, "bidNotional": _num(bid), "askNotional": _num(ask), "updateTime": pos.updated_ms}

    def _position_risk(self, version: str):
        def answer(params: dict) -> list:
            symbols = [self._symbol(params)] if "symbol" in params else sorted(self.account.instruments)
            out = []
            for s in symbols:
                row = self._position_numbers(s)
                if version == "v2":  # every symbol, with the fields v3 dropped
                    row.update(leverage=str(self.account.leverage), marginType="cross", isAutoAddMargin="false",
                               maxNotionalValue="50000")
                    out.append(row)
                elif self.account.positions[s].qty or self.account.open_orders(s):  # v3: only what is live
                    out.append(row)
            return out
        return answer

    def _account(self, params: dict) -> dict:
        acct = self.account
        upnl = sum(self._unrealized(s) for s in acct.instruments)
        pos_im, ord_im = acct.position_margin(), acct.order_margin()
        maint = sum(abs(p.qty) * self.mark(s) * MAINT_RATIO for s, p in acct.positions.items())
        available = acct.available()
        now = self.server.venue_now_ms()
        wallet = acct.wallet
        asset = {"asset": self.asset, "walletBalance": _num(wallet), "unrealizedProfit": _num(upnl),
                 "marginBalance": _num(wallet + upnl), "maintMargin": _num(maint),
                 "initialMargin": _num(pos_im + ord_im), "positionInitialMargin": _num(pos_im),
                 "openOrderInitialMargin": _num(ord_im), "crossWalletBalance": _num(wallet),
                 "crossUnPnl": _num(upnl), "availableBalance": _num(available),
                 "maxWithdrawAmount": _num(available), "marginAvailable": True, "updateTime": now}
        positions = [{k: row[k] for k in ("symbol", "positionSide", "positionAmt", "unrealizedProfit",
                                          "isolatedMargin", "notional", "isolatedWallet", "initialMargin",
                                          "maintMargin", "updateTime")}
                     for row in (self._position_numbers(s) for s in sorted(acct.instruments))
                     if float(row["positionAmt"]) != 0]
        return {"totalInitialMargin": _num(pos_im + ord_im), "totalMaintMargin": _num(maint),
                "totalWalletBalance": _num(wallet), "totalUnrealizedProfit": _num(upnl),
                "totalMarginBalance": _num(wallet + upnl), "totalPositionInitialMargin": _num(pos_im),
                "totalOpenOrderInitialMargin": _num(ord_im), "totalCrossWalletBalance": _num(wallet),
                "totalCrossUnPnl": _num(upnl), "availableBalance": _num(available),
                "maxWithdrawAmount": _num(available), "canTrade": True, "canDeposit": True, "canWithdraw": True,
                "multiAssetsMargin": False, "updateTime": 0, "assets": [asset], "positions": positions}

    # --- tests ----------------------------------------------------------------------------------------

    def balances_snapshot(self) -> dict:
        acct = self.account
        return {self.asset: {"free": acct.available(), "locked": acct.position_margin() + acct.order_margin(),
                             "total": acct.wallet}}

    def positions_snapshot(self) -> dict:
        return {s: {"qty": p.qty, "entry_price": p.entry, "realized_pnl": p.realized}
                for s, p in sorted(self.account.positions.items())}
