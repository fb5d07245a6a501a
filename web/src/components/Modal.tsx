/** Modal dialogs on the native <dialog>: focus trapping, Escape and the inert page come free. */
import { type ReactNode, useCallback, useEffect, useId, useRef, useState } from "react";

interface ModalProps {
  open: boolean;
  title: string;
  onClose(): void;
  children: ReactNode;
  wide?: boolean;
}

export function Modal({ open, title, onClose, children, wide }: ModalProps) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();

  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    else if (!open && dialog.open) dialog.close();
  }, [open]);

  return (
    <dialog
      ref={ref}
      className={wide ? "modal modal-wide" : "modal"}
      aria-labelledby={titleId}
      onClose={onClose}
      // A click on the backdrop lands on the dialog itself; Escape closes it natively.
      onPointerDown={(e) => {
        if (e.target === e.currentTarget) onClose();
      }}
    >
      <div className="modal-header">
        <h2 id={titleId}>{title}</h2>
        <button type="button" className="icon-button" aria-label="Close" onClick={onClose}>
          ×
        </button>
      </div>
      {open && <div className="modal-body">{children}</div>}
    </dialog>
  );
}

interface ConfirmRequest {
  title: string;
  message: ReactNode;
  confirmLabel: string;
  resolve(ok: boolean): void;
}

/** A confirm() that looks like the console: await confirm({...}) → true when confirmed. */
export function useConfirm(): [ReactNode, (request: Omit<ConfirmRequest, "resolve">) => Promise<boolean>] {
  const [request, setRequest] = useState<ConfirmRequest | null>(null);

  const confirm = useCallback(
    (r: Omit<ConfirmRequest, "resolve">) => new Promise<boolean>((resolve) => setRequest({ ...r, resolve })),
    [],
  );
  const answer = (ok: boolean) => {
    request?.resolve(ok);
    setRequest(null);
  };

  const element = (
    <Modal open={request !== null} title={request?.title ?? ""} onClose={() => answer(false)}>
      <p>{request?.message}</p>
      <div className="actions">
        <button type="button" className="button" onClick={() => answer(false)}>
          Cancel
        </button>
        <button type="button" className="button button-danger" onClick={() => answer(true)}>
          {request?.confirmLabel}
        </button>
      </div>
    </Modal>
  );
  return [element, confirm];
}
