/**
 * This browser's camera as a Maskwatch source: frames go to the server as JPEG over the
 * source's WebSocket, one at a time (the next is taken when the answer to the last arrives), so
 * a slow server lowers the frame rate instead of building a queue.
 */
import type { LiveTrack } from "./api.ts";

const MAX_WIDTH = 640;
const JPEG_QUALITY = 0.8;
/** After an error answer (busy server, bad frame) wait a moment before the next frame. */
const RETRY_MS = 500;

export interface CameraAnswer {
  tracks: LiveTrack[];
  /** Size of the frame the tracks' boxes refer to. */
  width: number;
  height: number;
}

export interface CameraCallbacks {
  answer(answer: CameraAnswer): void;
  /** A frame the server could not analyse; frames keep going. */
  frameError(message: string): void;
  /** The session ended by itself (socket closed, camera gone). */
  ended(message: string): void;
}

export class CameraSession {
  private stream: MediaStream | undefined;
  private socket: WebSocket | undefined;
  private readonly canvas = document.createElement("canvas");
  private stopped = false;
  private retry: number | undefined;

  constructor(
    private readonly video: HTMLVideoElement,
    private readonly callbacks: CameraCallbacks,
  ) {}

  /** Opens the camera, then the source's socket; rejects with a message a person can act on. */
  async start(sourceId: string): Promise<void> {
    if (!navigator.mediaDevices?.getUserMedia)
      throw new Error("This browser cannot use a camera here (a camera needs HTTPS or localhost).");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
    } catch (err) {
      const name = (err as DOMException).name;
      throw new Error(
        name === "NotAllowedError"
          ? "Camera access was denied. Allow the camera for this site and try again."
          : name === "NotFoundError"
            ? "No camera was found."
            : `The camera could not be opened: ${(err as Error).message}`,
      );
    }
    if (this.stopped) return this.release();
    this.stream.getVideoTracks()[0]?.addEventListener("ended", () => this.end("The camera stopped."));
    this.video.srcObject = this.stream;
    await this.video.play();

    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(
      `${scheme}//${window.location.host}/api/v1/sources/${encodeURIComponent(sourceId)}/frames`,
    );
    this.socket = socket;
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error("Could not connect to the server for live frames."));
    });
    socket.onerror = null;
    socket.onclose = (e) => this.end(e.reason ? `Connection closed: ${e.reason}` : "Connection closed.");
    socket.onmessage = (e) => this.onMessage(e.data);
    this.sendFrame();
  }

  stop(): void {
    this.stopped = true;
    this.release();
  }

  private end(message: string): void {
    if (this.stopped) return;
    this.stop();
    this.callbacks.ended(message);
  }

  private release(): void {
    window.clearTimeout(this.retry);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.onmessage = null;
      this.socket.close();
    }
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.video.srcObject = null;
  }

  private onMessage(data: unknown): void {
    if (this.stopped || typeof data !== "string") return;
    let msg: { type?: string; tracks?: LiveTrack[]; message?: string };
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.type === "tracks") {
      this.callbacks.answer({
        tracks: msg.tracks ?? [],
        width: this.canvas.width,
        height: this.canvas.height,
      });
      this.sendFrame();
    } else if (msg.type === "error") {
      this.callbacks.frameError(msg.message ?? "The server could not analyse a frame.");
      this.retry = window.setTimeout(() => this.sendFrame(), RETRY_MS);
    }
  }

  /** The current video frame, at most MAX_WIDTH wide, as JPEG; waits for a frame if none yet. */
  private sendFrame(): void {
    if (this.stopped) return;
    const { videoWidth, videoHeight } = this.video;
    if (!videoWidth || !videoHeight) {
      this.retry = window.setTimeout(() => this.sendFrame(), 100);
      return;
    }
    const scale = Math.min(1, MAX_WIDTH / videoWidth);
    this.canvas.width = Math.round(videoWidth * scale);
    this.canvas.height = Math.round(videoHeight * scale);
    this.canvas.getContext("2d")?.drawImage(this.video, 0, 0, this.canvas.width, this.canvas.height);
    this.canvas.toBlob(
      (blob) => {
        if (this.stopped || this.socket?.readyState !== WebSocket.OPEN) return;
        if (blob) this.socket.send(blob);
        else this.retry = window.setTimeout(() => this.sendFrame(), RETRY_MS);
      },
      "image/jpeg",
      JPEG_QUALITY,
    );
  }
}
