"""Patient identifiers derived from file names.

Source: the Kermany et al. 2018 chest X-ray release (Mendeley Data
doi:10.17632/rscbjbr9sj.2) names files ``personN_bacteria_M.jpeg``,
``personN_virus_M.jpeg``, ``IM-XXXX-YYYY.jpeg`` and ``NORMAL2-IM-XXXX-YYYY.jpeg``,
where everything before the last number identifies the patient.
"""

from __future__ import annotations

import re
from pathlib import PurePath

__all__ = ["patient_id_from_filename"]

_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE)


def patient_id_from_filename(path: str | PurePath) -> str:
    """Derive a patient identifier from a Kermany-style file name.

    Parameters
    ----------
    path : str or PurePath
        Any path; only the file name is used.

    Returns
    -------
    str
        ``personN`` for ``personN_*``, ``IM-0115`` for ``IM-0115-0001``,
        ``NORMAL2-IM-0381`` for ``NORMAL2-IM-0381-0001``; for any other name
        the file stem (each image then counts as its own patient).

    Examples
    --------
    >>> patient_id_from_filename("train/PNEUMONIA/person12_bacteria_45.jpeg")
    'person12'
    >>> patient_id_from_filename("NORMAL2-IM-0381-0001.jpeg")
    'NORMAL2-IM-0381'
    """
    name = PurePath(path).name
    for pattern in (_PERSON, _IM):
        m = pattern.match(name)
        if m:
            return m.group(1)
    return PurePath(name).stem
