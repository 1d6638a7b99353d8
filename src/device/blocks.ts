/** One piece of a byte range that lies inside a single block. */
export interface BlockPiece {
  /** Block number. */
  index: number;
  /** Offset of the piece inside its block. */
  within: number;
  /** Offset of the piece from the start of the range (into the caller's buffer). */
  done: number;
  /** Length of the piece in bytes. */
  length: number;
}

/** Split the range [offset, offset+length) at `blockSize` boundaries, in order. */
export function* blockPieces(offset: number, length: number, blockSize: number): Generator<BlockPiece> {
  for (let done = 0; done < length; ) {
    const pos = offset + done;
    const index = Math.floor(pos / blockSize);
    const within = pos - index * blockSize;
    const n = Math.min(length - done, blockSize - within);
    yield { index, within, done, length: n };
    done += n;
  }
}
