"""SMS opt-out keywords: whether a reply is one (`settings.SMS_OPT_OUT_KEYWORDS`)."""

from django.conf import settings

KEYWORD_PUNCTUATION = ".,!?;:'\"()"


def _keyword_form(text: str) -> str:
    return " ".join(text.split()).upper().strip(KEYWORD_PUNCTUATION + " ")


def sms_opt_out_keyword(reply_text: str | None) -> str | None:
    """The opt-out keyword a reply is, if it is one (`settings.SMS_OPT_OUT_KEYWORDS`).

    The whole reply must be the keyword. Case, surrounding punctuation and spacing do not matter:
    whitespace is collapsed and then ignored altogether, so " stop ", "Opt  out", "OPTOUT",
    "STOP ALL" and "StopAll" match "STOP", "OPT OUT" and "STOPALL". "Please stop" does not.
    """
    form = _keyword_form(reply_text or "")
    compact = form.replace(" ", "")
    if not compact:
        return None
    for keyword in settings.SMS_OPT_OUT_KEYWORDS:
        if _keyword_form(keyword).replace(" ", "") == compact:
            return _keyword_form(keyword)
    return None
