"""Line charts as PNG files with the standard library alone (zlib for the compression, a 5x7
bitmap font for the text): `vtorque jobs stats --plot` draws on every node without a
plotting library (matplotlib is the benchmarks' optional extra, never a dependency)."""

import math
import struct
import zlib
from dataclasses import dataclass

# Five columns per character, bit 0 the top row (the classic 5x7 LCD font), printable ASCII.
_FONT = (
    "0000000000 00005f0000 0007000700 147f147f14 242a7f2a12 2313086462 3649552250 0005030000 "
    "001c224100 0041221c00 082a1c2a08 08083e0808 0050300000 0808080808 0060600000 2010080402 "
    "3e5149453e 00427f4000 4261514946 2141454b31 1814127f10 2745454539 3c4a494930 0171090503 "
    "3649494936 064949291e 0036360000 0056360000 0008142241 1414141414 4122140800 0201510906 "
    "3249794136 7e1111117e 7f49494936 3e41414122 7f4141221c 7f49494941 7f09090101 3e41415132 "
    "7f0808087f 00417f4100 2040413f01 7f08142241 7f40404040 7f0204027f 7f0408107f 3e4141413e "
    "7f09090906 3e4151215e 7f09192946 4649494931 01017f0101 3f4040403f 1f2040201f 7f2018207f "
    "6314081463 0304780403 6151494543 00007f4141 0204081020 41417f0000 0402010204 4040404040 "
    "0001020400 2054545478 7f48444438 3844444420 384444487f 3854545418 087e090102 081454543c "
    "7f08040478 00447d4000 2040443d00 007f102844 00417f4000 7c04180478 7c08040478 3844444438 "
    "7c14141408 081414187c 7c08040408 4854545420 043f444020 3c4040207c 1c2040201c 3c4030403c "
    "4428102844 0c5050503c 4464544c44 0008364100 00007f0000 0041360800 0804080408"
).split()
GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (30, 30, 30), (120, 120, 120), (225, 225, 225)
# Colours told apart also by people with the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233))


@dataclass(frozen=True)
class Series:
    label: str
    colour: tuple
    points: tuple  # (x, y) pairs, x ascending; a None y breaks the line
    dashed: bool = False


@dataclass(frozen=True)
class Panel:
    title: str  # with the unit of the y axis
    series: tuple


class Canvas:
    def __init__(self, width, height, background=WHITE):
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x, y, colour):
        if 0 <= x < self.width and 0 <= y < self.height:
            at = (y * self.width + x) * 3
            self.pixels[at : at + 3] = bytes(colour)

    def fill(self, x0, y0, x1, y1, colour):
        for y in range(max(0, y0), min(self.height, y1)):
            for x in range(max(0, x0), min(self.width, x1)):
                self.dot(x, y, colour)

    def line(self, x0, y0, x1, y1, colour, width=1, dash=None):
        """Bresenham; `dash` (on, off) in pixels along the line."""
        x0, y0, x1, y1 = (round(v) for v in (x0, y0, x1, y1))
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        error, step = dx + dy, 0
        while True:
            if dash is None or step % sum(dash) < dash[0]:
                for ox in range(width):
                    for oy in range(width):
                        self.dot(x0 + ox - width // 2, y0 + oy - width // 2, colour)
            if (x0, y0) == (x1, y1):
                return
            step += 1
            twice = 2 * error
            if twice >= dy:
                error, x0 = error + dy, x0 + sx
            if twice <= dx:
                error, y0 = error + dx, y0 + sy

    def text(self, x, y, text, colour=BLACK, scale=2, align="left"):
        """`text` with its top at `y`; `align` says where `x` is: left, center or right."""
        width = text_width(text, scale)
        x -= {"left": 0, "center": width // 2, "right": width}[align]
        for char in text:
            code = ord(char) - 32
            columns = bytes.fromhex(_FONT[code if 0 <= code < len(_FONT) else ord("?") - 32])
            for column, bits in enumerate(columns):
                for row in range(GLYPH_H):
                    if bits >> row & 1:
                        self.fill(
                            x + column * scale,
                            y + row * scale,
                            x + (column + 1) * scale,
                            y + (row + 1) * scale,
                            colour,
                        )
            x += ADVANCE * scale

    def png(self):
        rows = b"".join(
            b"\0" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3])
            for y in range(self.height)
        )

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b"")
        )


def text_width(text, scale=2):
    return len(text) * ADVANCE * scale - scale


def nice_ticks(low, high, count=5):
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def tick_label(value, step):
    if step >= 1:
        return f"{value:.0f}"
    return f"{value:.{min(6, -math.floor(math.log10(step)))}f}"


def chart(path, title, panels, xlabel, width=960):
    """Write a PNG of `panels` stacked, sharing one x axis, with a legend of every label."""
    panel_h, gap, top, left, right, bottom = 230, 70, 70, 90, 30, 30
    height = top + len(panels) * (panel_h + gap) + bottom
    canvas = Canvas(width, height)
    canvas.text(width // 2, 12, title, scale=2, align="center")
    _legend(canvas, panels, left, 40)
    xs = [x for panel in panels for series in panel.series for x, _ in series.points]
    xticks = nice_ticks(min(xs, default=0), max(xs, default=1))
    for number, panel in enumerate(panels):
        y0 = top + number * (panel_h + gap) + 30
        _panel(canvas, panel, (left, y0, width - right, y0 + panel_h), xticks)
    canvas.text(width // 2, height - 28, xlabel, scale=2, align="center")
    with open(path, "wb") as handle:
        handle.write(canvas.png())


def _legend(canvas, panels, x, y):
    seen = {}
    for panel in panels:
        for series in panel.series:
            seen.setdefault(series.label, series.colour)
    for label, colour in seen.items():
        canvas.fill(x, y + 4, x + 22, y + 10, colour)
        canvas.text(x + 28, y, label, scale=2)
        x += 28 + text_width(label) + 24


def _panel(canvas, panel, box, xticks):
    x0, y0, x1, y1 = box
    ys = [y for series in panel.series for _, y in series.points if y is not None]
    yticks = nice_ticks(0, max(ys, default=1) or 1, 4)
    xlow, xhigh, ylow, yhigh = xticks[0], xticks[-1], yticks[0], yticks[-1]

    def at(x, y):
        return (
            x0 + (x - xlow) / (xhigh - xlow) * (x1 - x0),
            y1 - (y - ylow) / (yhigh - ylow) * (y1 - y0),
        )

    canvas.text(x0, y0 - 24, panel.title, scale=2)
    ystep, xstep = yticks[1] - yticks[0], xticks[1] - xticks[0]
    for value in yticks:
        _, y = at(xlow, value)
        canvas.line(x0, y, x1, y, LIGHT)
        canvas.text(x0 - 8, round(y) - 7, tick_label(value, ystep), GREY, align="right")
    for value in xticks:
        x, _ = at(value, ylow)
        canvas.line(x, y0, x, y1, LIGHT)
        canvas.line(x, y1, x, y1 + 5, BLACK)
        canvas.text(round(x), y1 + 9, tick_label(value, xstep), GREY, align="center")
    canvas.line(x0, y1, x1, y1, BLACK)
    canvas.line(x0, y0, x0, y1, BLACK)
    for series in panel.series:
        previous = None
        for x, y in series.points:
            point = None if y is None else at(x, y)
            if previous and point:
                canvas.line(*previous, *point, series.colour, width=2, dash=(7, 5) if series.dashed else None)
            previous = point
