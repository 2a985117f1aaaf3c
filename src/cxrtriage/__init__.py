"""cxrtriage: chest X-ray AI for research and second opinion.

Train, evaluate, explain and serve CNN classifiers for chest radiographs.
Not a medical device and not a diagnosis: every output is a draft for a
qualified radiologist to confirm.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "Research and second-opinion use only. Not a diagnosis and not a medical device: "
    "every result must be reviewed and confirmed by a qualified radiologist."
)
