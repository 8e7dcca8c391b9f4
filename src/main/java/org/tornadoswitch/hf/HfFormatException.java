package org.tornadoswitch.hf;

/**
 * A checkpoint or tokenizer file that cannot be used. The message is one line that names the file
 * and the problem; the CLI prints it and exits with code 2.
 */
public final class HfFormatException extends RuntimeException {
    public HfFormatException(String message) {
        super(message);
    }

    public HfFormatException(String message, Throwable cause) {
        super(message, cause);
    }
}
