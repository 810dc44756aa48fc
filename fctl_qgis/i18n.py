"""Translation of the plugin's user-visible strings (one Qt context for the whole plugin)."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtCore import QCoreApplication, QTranslator

CONTEXT = "FCtL"
# Translations: fctl_qgis/i18n/fctl_<locale>.qm (e.g. fctl_de.qm), made with pylupdate/lrelease
FOLDER = Path(__file__).resolve().parent / "i18n"

_translator: QTranslator | None = None


def tr(text: str) -> str:
    return QCoreApplication.translate(CONTEXT, text)


def install_translator(locale: str | None = None) -> bool:
    """Load the translation for QGIS's user interface locale (``locale/userLocale``) when the
    plugin ships one; True when one was installed."""
    global _translator
    if _translator is not None:
        return True
    if locale is None:
        from qgis.core import QgsSettings

        locale = str(QgsSettings().value("locale/userLocale", "") or "")
    for name in (locale, locale[:2]):
        qm = FOLDER / f"fctl_{name}.qm"
        if name and qm.is_file():
            translator = QTranslator()
            if translator.load(str(qm)):
                QCoreApplication.installTranslator(translator)
                _translator = translator
                return True
    return False


def remove_translator() -> None:
    global _translator
    if _translator is not None:
        QCoreApplication.removeTranslator(_translator)
        _translator = None
