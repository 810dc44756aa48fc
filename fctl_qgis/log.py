"""The plugin's messages in QGIS's *Log Messages* panel (tab "FCtL").

The engine (``model_core``) and the adapter (``fctl_qgis``) log through Python's ``logging``, which
QGIS does not show. While the plugin is loaded a :class:`MessageLogHandler` on both loggers
forwards their records to :class:`QgsMessageLog` under :data:`TAG`, with the matching Qgis level
(tracebacks included); :func:`uninstall` removes it again in ``unload``.
"""

from __future__ import annotations

import logging

from qgis.core import Qgis, QgsMessageLog

TAG = "FCtL"                              # the tab of the Log Messages panel
LOGGERS = ("model_core", "fctl_qgis")


def qgis_level(levelno: int) -> Qgis.MessageLevel:
    """Qgis message level of a Python logging level."""
    if levelno >= logging.ERROR:
        return Qgis.MessageLevel.Critical
    if levelno >= logging.WARNING:
        return Qgis.MessageLevel.Warning
    return Qgis.MessageLevel.Info


def message_log(text: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
    """Write ``text`` under the plugin's tab (safe from worker threads: QgsMessageLog queues)."""
    QgsMessageLog.logMessage(text, TAG, level)


class MessageLogHandler(logging.Handler):
    """Forwards log records to :class:`QgsMessageLog` (tag :data:`TAG`)."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message_log(self.format(record), qgis_level(record.levelno))
        except Exception:   # logging must never break a run
            self.handleError(record)


_installed: list[tuple[logging.Logger, MessageLogHandler, int]] = []


def install(level: int = logging.INFO) -> None:
    """Attach a handler to the engine's and the plugin's loggers (idempotent). Loggers left at
    NOTSET get ``level`` so that the run summaries (INFO) reach the panel; restored by
    :func:`uninstall`."""
    if _installed:
        return
    for name in LOGGERS:
        logger = logging.getLogger(name)
        handler = MessageLogHandler(level)
        logger.addHandler(handler)
        previous = logger.level
        if previous == logging.NOTSET:
            logger.setLevel(level)
        _installed.append((logger, handler, previous))


def uninstall() -> None:
    """Remove what :func:`install` attached (the plugin is unloaded)."""
    while _installed:
        logger, handler, previous = _installed.pop()
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def installed() -> bool:
    return bool(_installed)
