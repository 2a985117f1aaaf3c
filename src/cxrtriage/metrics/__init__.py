"""Pure metrics: NumPy and scikit-learn in, numbers out (no torch, no files).

Classification metrics with bootstrap intervals, calibration (softmax,
temperature scaling, ECE), the decision rule and the operating point.
"""
