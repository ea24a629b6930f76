"""python-telegram-bot's pluggable transport (`telegram.request.BaseRequest`) on aiohttp.

PTB's default, HTTPXRequest, goes through httpcore, whose connection pool walks every pooled
connection (and polls each idle one's socket) on every request: with the few dozen warm
connections a busy bot needs, that is most of the CPU a reply costs. aiohttp's connector keeps
idle connections per host in a list and takes one off the end. Everything above the transport
(the Bot methods, their parameters and the parsing of Telegram's answers, errors and rate
limiting) is still python-telegram-bot's: this class only moves bytes, as HTTPXRequest does.
"""

from __future__ import annotations

import json

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

_JSON = {"Content-Type": "application/json"}


class AiohttpRequest(BaseRequest):
    """One aiohttp session with at most `connection_pool_size` connections.

    Requests are encoded as HTTPXRequest encodes them: the parameters as an urlencoded form,
    or, when the request uploads a file, everything as multipart/form-data."""

    def __init__(
        self,
        connection_pool_size: int = 32,
        *,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0),
                headers={"User-Agent": self.USER_AGENT},
                # Telegram's answers are JSON we hand to PTB as bytes: no cookies to keep.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data else None

        read = self._read_timeout if isinstance(read_timeout, DefaultValue) else read_timeout
        connect = (
            self._connect_timeout if isinstance(connect_timeout, DefaultValue)
            else connect_timeout
        )
        pool = self._pool_timeout if isinstance(pool_timeout, DefaultValue) else pool_timeout
        if isinstance(write_timeout, DefaultValue):
            write = self._write_timeout if not files else self._media_write_timeout
        else:
            write = write_timeout
        # aiohttp has no separate write timeout: sending is bounded by the whole request's.
        total = None
        if read is not None and write is not None:
            total = read + write + (connect or 0) + (pool or 0)
        timeout = aiohttp.ClientTimeout(
            total=total,
            connect=None if connect is None and pool is None else (connect or 0) + (pool or 0),
            sock_connect=connect,
            sock_read=read,
        )

        data: aiohttp.FormData | bytes | None
        headers: dict[str, str] | None = None
        if files:
            assert request_data is not None
            form = aiohttp.FormData(quote_fields=False)
            for name, value in request_data.json_parameters.items():
                form.add_field(name, value)
            for name, upload in files.items():
                if isinstance(upload, tuple):
                    filename, content, *rest = upload
                    form.add_field(name, content, filename=filename,
                                   content_type=rest[0] if rest else None)
                else:
                    form.add_field(name, upload)
            data = form
        elif request_data is not None and (params := request_data.parameters):
            # A JSON body, as the Bot API accepts: one C-encoded dumps of the values. aiohttp's
            # FormData cost a quarter of a reply's CPU, and urlencode quotes every byte of the
            # text in Python (2 % of the bot's CPU in bench.chat, more for Chinese text).
            data = json.dumps(params, ensure_ascii=False).encode()
            headers = _JSON
        else:
            data = None

        try:
            async with session.request(
                method, url, data=data, headers=headers, timeout=timeout
            ) as res:
                return res.status, await res.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as err:
            raise TimedOut from err
        except aiohttp.ClientError as err:
            raise NetworkError(f"aiohttp.{err.__class__.__name__}: {err}") from err
