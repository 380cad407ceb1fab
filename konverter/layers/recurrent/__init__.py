"""Recurrent layers: SimpleRNN, GRU, LSTM (and the old CuDNNGRU/CuDNNLSTM), the generic RNN around
their cells, Bidirectional, TimeDistributed, ConvLSTM1D/2D/3D.

One concern per module:
    cells.py             what one step computes; the weights laid out for the loops ([x, h, 1] rows)
    loops.py             the time loops, one function call per layer in the generated file
    rnn.py               the SimpleRNN/GRU/LSTM/RNN converters (RNNSpec: config + weights, checked)
    bidirectional.py     Bidirectional
    time_distributed.py  TimeDistributed
    convlstm.py          ConvLSTM1D/2D/3D (conv.py's convolutions inside an LSTM step)

Importing this package registers the converters of every module (layers/__init__ imports only the
package itself).
"""

from __future__ import annotations

from . import bidirectional, cells, convlstm, loops, rnn, time_distributed

__all__ = ["bidirectional", "cells", "convlstm", "loops", "rnn", "time_distributed"]
