# The Python-level imports of _ring.pyx and of every .pyx it includes: one
# module, so one list (uvloop's includes/stdlib.pxi pattern).  Names of
# asyncio's private helpers that zcloop reuses unchanged are imported here,
# never copied.
import collections
import collections.abc
import concurrent.futures
import errno as errno_mod
import fcntl
import functools
import io
import ipaddress
import itertools
import logging
import os
import resource
import signal
import socket
import stat
import struct
import sys
import threading
import warnings
import weakref

from asyncio import coroutines as aio_coroutines
from asyncio import events as aio_events
from asyncio import futures as aio_futures
from asyncio import tasks as aio_tasks
from asyncio import AbstractEventLoop
from asyncio import constants as aio_constants
from asyncio import exceptions as aio_exceptions
from asyncio import protocols as aio_protocols
from asyncio import staggered as aio_staggered
from asyncio.base_events import _check_ssl_socket, _ipaddr_info, _set_reuseport
from asyncio.constants import LOG_THRESHOLD_FOR_CONNLOST_WRITES
from asyncio.protocols import BufferedProtocol as aio_protocols_BufferedProtocol
try:
    import ssl as ssl_mod
except ImportError:
    ssl_mod = None
from asyncio.trsock import TransportSocket
from asyncio.format_helpers import _format_callback_source as format_callback_source
from traceback import extract_stack, format_list
from sys import _getframe as sys_getframe
from time import get_clock_info as time_get_clock_info
import subprocess
from asyncio import base_events as aio_base_events
from asyncio import unix_events as aio_unix_events


logger = logging.getLogger('asyncio')

aio_constants_DEBUG_STACK_DEPTH = aio_constants.DEBUG_STACK_DEPTH
aio_exceptions_TimeoutError = (aio_exceptions.TimeoutError, TimeoutError)

# The coroutine-function test asyncio's loop applies to callbacks
# (base_events._check_callback, unix_events.add_signal_handler): 3.14 calls
# coroutines._iscoroutinefunction there, the same test without the
# DeprecationWarning that the public asyncio.iscoroutinefunction() now gives.
aio_iscoroutinefunction = getattr(aio_coroutines, '_iscoroutinefunction',
                                  aio_coroutines.iscoroutinefunction)
